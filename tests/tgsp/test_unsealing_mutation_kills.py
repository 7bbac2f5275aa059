"""The one-pass opener's rules, pinned where an operator or a caller sees them (#18 item 6).

``tensorguard/tgsp/_unsealing.py`` reads each payload segment once, checks its signed
SHA-256, decrypts it and hands the plaintext to two lanes (per-file SHA-256, writing).
These tests pin what it promises beyond "a good package opens": which geometry it takes
(segments up to exactly 17 MiB) and how many segments it holds at once (the memory
budget), each refusal in full (an altered segment, a package that shrinks while it is
opened, a file that differs, ends early or is followed by more bytes, a segment after a
failed one, a payload too large for one pass), that every file is complete on disk and
closed before the next one is created, and that many large files in one segment open on
worker threads (writes and their flushes on separate lanes: on one lane the writer would
wait for a flush queued behind itself). Real packages and files in temporary directories;
the file hooks are real files whose state the test reads when the next one is created.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from tensorguard.crypto import ChunkCipher, XWingPrivateKey
from tensorguard.tgsp import (
    FileDigestError,
    PackageTruncatedError,
    PayloadDigestError,
    TrustStore,
    open_package,
)
from tensorguard.tgsp import _opener as opener
from tensorguard.tgsp._header import PayloadInfo
from tensorguard.tgsp._parallel import Workers, Writeback
from tensorguard.tgsp._unsealing import (
    OPEN_BUFFER_BYTES,
    SINGLE_PASS_SEGMENT_BYTES,
    _FileDigests,
    _InOrder,
    _TreeWriter,
    fits_single_pass,
    open_segments,
    segments_in_flight,
)
from tensorguard.tgsp._verifier import verify_header
from tests.tgsp.conftest import SMALL_CHUNK, Packager, assert_no_leftovers, file_entries

MIB = 1024 * 1024
SEGMENT_PLAIN = 2 * SMALL_CHUNK
FILES = {
    "a.bin": os.urandom(2 * SEGMENT_PLAIN + 10),
    "b/c.bin": os.urandom(3 * SEGMENT_PLAIN),
    "d.bin": os.urandom(SEGMENT_PLAIN - 7),
}


def _payload(chunk_size: int, segment_chunks: int, chunks: int = 1) -> PayloadInfo:
    length = chunks * (chunk_size + 16)
    segments = -(-chunks // segment_chunks)
    return PayloadInfo(chunk_size, chunks, length, segment_chunks, ("00" * 32,) * segments)


# --- geometry and memory -----------------------------------------------------------------


def test_segments_up_to_exactly_17_mib_open_in_one_pass(packager: Packager) -> None:
    exactly = _payload(MIB - 16, 17)
    assert exactly.segment_bytes == SINGLE_PASS_SEGMENT_BYTES == 17 * MIB
    assert fits_single_pass(exactly)
    assert not fits_single_pass(_payload(MIB - 15, 17))
    # The builder's own geometry on either side of the limit (1 KiB chunks).
    assert fits_single_pass(packager.build({"f": b"1"}, segment_chunks=17140).header.payload)
    assert not fits_single_pass(packager.build({"f": b"1"}, segment_chunks=17141).header.payload)
    assert fits_single_pass(packager.build({"f": b"1"}, segment_chunks=None).header.payload)


def test_open_segments_refuses_segments_too_large_for_one_pass(tmp_path: Path) -> None:
    payload = _payload(MIB - 15, 17)
    source = tmp_path / "payload"
    source.write_bytes(b"")
    with (
        source.open("rb", buffering=0) as handle,
        pytest.raises(ValueError, match="too large for the one-pass opener") as caught,
    ):
        open_segments(
            handle,
            0,
            payload,
            (),
            ChunkCipher(bytes(32), bytes(16), payload.chunk_size),
            lambda relative: (tmp_path / relative).open("xb"),
            threads=1,
        )
    assert str(caught.value) == (
        "segments too large for the one-pass opener; use the two-pass path"
    )


@pytest.mark.parametrize(
    ("threads", "chunk_size", "segment_chunks", "depth"),
    [
        (1, SMALL_CHUNK, 2, 1),  # serial: one segment at a time
        (1, MIB, 16, 1),
        (2, SMALL_CHUNK, 2, 3),  # small segments: one per thread plus one
        (4, SMALL_CHUNK, 2, 5),
        (5, MIB, 4, 6),  # 4 MiB segments: 8 fit the budget
        (16, MIB, 4, 8),
        (8, MIB, 16, 2),  # the builder's default 16 MiB segments: two, never fewer
    ],
)
def test_segments_in_flight_keep_the_threads_busy_within_the_budget(
    threads: int, chunk_size: int, segment_chunks: int, depth: int
) -> None:
    payload = _payload(chunk_size, segment_chunks)
    assert segments_in_flight(threads, payload) == depth
    plain = segment_chunks * chunk_size
    if depth > 2:  # a sealed and a plaintext buffer per segment, within OPEN_BUFFER_BYTES
        assert depth * (payload.segment_bytes + plain) <= OPEN_BUFFER_BYTES


# --- refusals in full --------------------------------------------------------------------


@pytest.mark.parametrize("threads", [1, 3])
def test_an_altered_segment_is_named_with_the_whole_reason(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    threads: int,
) -> None:
    result = packager.build(FILES)
    payload = result.header.payload
    start, _ = payload.segment_span(2)
    data = bytearray(result.path.read_bytes())
    data[len(data) - payload.length + start + 5] ^= 0x08
    result.path.write_bytes(bytes(data))
    destination = tmp_path / "out"
    with pytest.raises(PayloadDigestError) as caught:
        open_package(
            result.path,
            destination,
            recipient_key=recipients[0],
            trust_store=trust_store,
            threads=threads,
        )
    assert str(caught.value) == (
        f"payload segment 2 of {len(payload.segment_sha256)}: SHA-256 does not match the "
        "signed header; the encrypted payload was altered, reordered or spliced"
    )
    assert_no_leftovers(destination)


@pytest.mark.parametrize("threads", [1, 3])
def test_a_package_that_shrinks_while_it_is_opened_is_refused_as_truncated(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
    threads: int,
) -> None:
    """The file is cut in the middle of segment 3 after the header checks: the read comes
    back short and the next read finds the end (not bytes from elsewhere in the file)."""
    result = packager.build(FILES)
    start, length = result.header.payload.segment_span(3)

    def verify_then_truncate(*args: Any, **kwargs: Any) -> Any:
        verified = verify_header(*args, **kwargs)
        os.truncate(result.path, verified.payload_offset + start + length // 2)
        return verified

    monkeypatch.setattr(opener, "verify_header", verify_then_truncate)
    destination = tmp_path / "out"
    with pytest.raises(PackageTruncatedError) as caught:
        open_package(
            result.path,
            destination,
            recipient_key=recipients[0],
            trust_store=trust_store,
            threads=threads,
        )
    assert str(caught.value) == "package ended inside its payload"
    assert_no_leftovers(destination)


def test_file_digest_refusals_name_the_file_in_full() -> None:
    files = file_entries(b"abc", b"", b"defg", b"hi")
    with pytest.raises(FileDigestError) as caught:
        _FileDigests(files).update(memoryview(b"abcdeXg"))
    assert str(caught.value) == "f2: SHA-256 of the decrypted file differs from the signed manifest"
    with pytest.raises(FileDigestError) as caught:
        _FileDigests(files).update(memoryview(b"abcdefghi!"))
    assert str(caught.value) == "payload holds bytes beyond the files in the manifest"
    at_a_boundary = _FileDigests(files)
    at_a_boundary.update(memoryview(b"abcdefg"))  # ends exactly where f3 would begin
    with pytest.raises(FileDigestError) as caught:
        at_a_boundary.finish()
    assert str(caught.value) == "f3: payload ended before the file did"
    inside = _FileDigests(files)
    inside.update(memoryview(b"abcdefgh"))
    with pytest.raises(FileDigestError) as caught:
        inside.finish()
    assert str(caught.value) == "f3: payload ended before the file did"
    complete = _FileDigests(files)
    for byte in b"abcdefghi":
        complete.update(memoryview(bytes([byte])))
    complete.finish()


class _Files:
    """Creates real files under ``root``; at each creation, checks the earlier ones."""

    def __init__(self, root: Path, expected: dict[str, bytes]) -> None:
        self.root = root
        self.expected = expected
        self.opened: list[tuple[str, BinaryIO]] = []

    def create(self, relative: str) -> BinaryIO:
        for name, handle in self.opened:
            assert handle.closed, f"{name} still open when {relative} is created"
            assert (self.root / name).read_bytes() == self.expected[name]
        handle = (self.root / relative).open("xb")
        self.opened.append((relative, handle))
        return handle


CONTENTS = (b"abc", b"", b"defg", b"h", b"")


@pytest.mark.parametrize("piece", [1, 2, 3, 4, 5, 9])
def test_each_file_is_complete_and_closed_before_the_next_is_created(
    tmp_path: Path, piece: int
) -> None:
    files = file_entries(*CONTENTS)
    hook = _Files(tmp_path, {entry.path: data for entry, data in zip(files, CONTENTS, strict=True)})
    stream = b"".join(CONTENTS)
    with Workers(1) as workers, _TreeWriter(files, hook.create, Writeback(workers, 0)) as writer:
        for start in range(0, len(stream), piece):
            writer.write(memoryview(stream[start : start + piece]))
        writer.finish()
    assert [name for name, _ in hook.opened] == ["f0", "f1", "f2", "f3", "f4"]
    assert all(handle.closed for _, handle in hook.opened)
    assert {name: (tmp_path / name).read_bytes() for name, _ in hook.opened} == dict(
        zip(["f0", "f1", "f2", "f3", "f4"], CONTENTS, strict=True)
    )


@pytest.mark.parametrize(
    ("written", "message"),
    [
        (b"abcde", "f2: payload ended before the file did"),  # inside a file
        (b"abc", "f2: payload ended before the file did"),  # before a file with bytes
        (b"abcdefg", "f3: payload ended before the file did"),
    ],
)
def test_the_tree_writer_names_the_file_a_short_stream_ends_in(
    tmp_path: Path, written: bytes, message: str
) -> None:
    files = file_entries(*CONTENTS)
    create = _Files(tmp_path, dict(zip([e.path for e in files], CONTENTS, strict=True))).create
    with Workers(1) as workers, _TreeWriter(files, create, Writeback(workers, 0)) as writer:
        writer.write(memoryview(written))
        with pytest.raises(FileDigestError) as caught:
            writer.finish()
    assert str(caught.value) == message


def test_the_tree_writer_refuses_bytes_beyond_the_manifest_in_full(tmp_path: Path) -> None:
    files = file_entries(b"ab")
    create = _Files(tmp_path, {"f0": b"ab"}).create
    with (
        Workers(1) as workers,
        _TreeWriter(files, create, Writeback(workers, 0)) as writer,
        pytest.raises(FileDigestError) as caught,
    ):
        writer.write(memoryview(b"abc"))
    assert str(caught.value) == "payload holds bytes beyond the files in the manifest"
    assert (tmp_path / "f0").read_bytes() == b"ab"


def test_a_lane_refuses_every_segment_after_a_failed_one_in_full() -> None:
    lane = _InOrder(lambda _data: None)
    failed: Future[memoryview] = Future()
    failed.set_exception(PayloadDigestError("segment 0 altered"))
    with pytest.raises(PayloadDigestError):
        lane.feed(failed)
    good: Future[memoryview] = Future()
    good.set_result(memoryview(b"ok"))
    for _ in range(2):
        with pytest.raises(FileDigestError) as caught:
            lane.feed(good)
        assert str(caught.value) == "an earlier payload segment failed; this one was not used"


# --- many large files in one segment, on worker threads -----------------------------------


def test_many_large_files_in_one_segment_open_on_worker_threads(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    """Six files over 1 MiB in one 16 MiB segment: each finished file starts a flush (at
    most four queued), while the same segment is still being written."""
    files = {f"part-{index}.bin": os.urandom(MIB + 100 * index) for index in range(6)}
    result = packager.build(files, chunk_size=MIB, segment_chunks=16)
    assert len(result.header.payload.segment_sha256) == 1
    opened = open_package(
        result.path,
        tmp_path / "out",
        recipient_key=recipients[0],
        trust_store=trust_store,
        threads=2,
    )
    assert {p.name: p.read_bytes() for p in opened.destination.iterdir()} == files
