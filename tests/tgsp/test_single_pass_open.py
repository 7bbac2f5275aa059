"""The one-pass opener (tensorguard/tgsp/_unsealing.py): what it guarantees per segment.

Each segment is read into memory once; its signed SHA-256 is checked on those bytes
before any of them is decrypted, a lane uses a segment's plaintext only after every chunk
in it authenticated, and a failure anywhere removes everything written so far.
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import ChunkCipher, XWingPrivateKey
from tensorguard.tgsp import (
    ChunkAuthenticationError,
    FileDigestError,
    PayloadDigestError,
    TrustStore,
    open_package,
)
from tensorguard.tgsp import _opener as opener
from tensorguard.tgsp._header import FileEntry, PayloadInfo
from tensorguard.tgsp._unsealing import (
    _FileDigests,
    _InOrder,
    _SegmentOpener,
    _TreeWriter,
    fits_single_pass,
    open_segments,
)
from tensorguard.tgsp._verifier import verify_header
from tests.tgsp.conftest import (
    SMALL_CHUNK,
    SMALL_SEGMENT,
    Packager,
    assert_no_leftovers,
    file_entries,
)

SEGMENT_PLAIN = SMALL_CHUNK * SMALL_SEGMENT
# Five files over 8 segments (2 KiB each): the first file is complete after segment 1.
FILES = {
    "a.bin": os.urandom(2 * SEGMENT_PLAIN),
    "b/empty.bin": b"",
    "b/c.bin": os.urandom(3 * SEGMENT_PLAIN + 100),
    "d.bin": os.urandom(2 * SEGMENT_PLAIN),
    "e.bin": os.urandom(SEGMENT_PLAIN - 200),
}


class Spy:
    """Records which chunks were decrypted and how many plaintext bytes were written."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened: list[int] = []
        self.written = 0
        real_open, real_write = ChunkCipher.open_into, _TreeWriter.write

        def open_into(cipher: ChunkCipher, index: int, *args: Any, **kwargs: Any) -> int:
            self.opened.append(index)
            return real_open(cipher, index, *args, **kwargs)

        def write(writer: _TreeWriter, data: memoryview) -> None:
            self.written += len(data)
            real_write(writer, data)

        monkeypatch.setattr(ChunkCipher, "open_into", open_into)
        monkeypatch.setattr(_TreeWriter, "write", write)


def _flip_after_header_check(
    monkeypatch: pytest.MonkeyPatch, path: Path, payload_position: int
) -> None:
    """Flip one payload byte after steps 1-6 passed, before the payload is read."""
    real_verify_header = verify_header

    def verify_then_flip(*args: Any, **kwargs: Any) -> Any:
        verified = real_verify_header(*args, **kwargs)
        with path.open("r+b") as handle:
            handle.seek(verified.payload_offset + payload_position)
            original = handle.read(1)[0]
            handle.seek(verified.payload_offset + payload_position)
            handle.write(bytes([original ^ 0x01]))
        return verified

    monkeypatch.setattr(opener, "verify_header", verify_then_flip)


@pytest.mark.parametrize("threads", [1, 4])
def test_a_segment_changed_after_the_header_checks_is_never_decrypted_or_written(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
    threads: int,
) -> None:
    result = packager.build(FILES)
    payload = result.header.payload
    assert fits_single_pass(payload)
    bad_segment = 5
    start, _ = payload.segment_span(bad_segment)
    _flip_after_header_check(monkeypatch, result.path, start + 7)
    spy = Spy(monkeypatch)
    destination = tmp_path / "out"
    with pytest.raises(PayloadDigestError, match=f"payload segment {bad_segment} of 8"):
        open_package(
            result.path,
            destination,
            recipient_key=recipients[0],
            trust_store=trust_store,
            threads=threads,
        )
    first_bad_chunk = bad_segment * payload.segment_chunks
    bad_chunks = set(range(first_bad_chunk, first_bad_chunk + payload.segment_chunks))
    assert spy.opened, "the segments before the altered one were opened"
    assert not bad_chunks & set(spy.opened)  # the altered segment was never decrypted
    if threads == 1:
        assert max(spy.opened) < first_bad_chunk
    assert spy.written <= bad_segment * SEGMENT_PLAIN  # nothing from it or after it written
    assert_no_leftovers(destination)


def test_a_failure_after_files_were_written_leaves_no_partial_tree(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = packager.build(FILES)
    last = len(result.header.payload.segment_sha256) - 1
    start, length = result.header.payload.segment_span(last)
    _flip_after_header_check(monkeypatch, result.path, start + length - 1)  # the last tag
    spy = Spy(monkeypatch)
    destination = tmp_path / "out"
    with pytest.raises(PayloadDigestError, match=f"payload segment {last} of"):
        open_package(result.path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert spy.written >= 2 * SEGMENT_PLAIN  # a.bin at least was complete in the staging tree
    assert_no_leftovers(destination)


def test_without_the_segment_check_aes_gcm_still_refuses_the_changed_chunk(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Defence in depth: with the segment digest check removed, the flipped byte fails the
    chunk's AES-GCM tag, and nothing of that chunk is written."""
    result = packager.build(FILES)
    _flip_after_header_check(monkeypatch, result.path, 3 * (SMALL_CHUNK + 16) + 5)  # chunk 3
    monkeypatch.setattr(_SegmentOpener, "_check", lambda *_: None)
    spy = Spy(monkeypatch)
    destination = tmp_path / "out"
    with pytest.raises(ChunkAuthenticationError, match="payload chunk 3"):
        open_package(result.path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert spy.written <= SEGMENT_PLAIN  # segment 0 at most: segment 1 holds chunk 3
    assert_no_leftovers(destination)


def test_chunks_are_opened_under_their_own_index_and_final_flag(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A segment's chunks decrypt only under their stream position: the last chunk must be
    opened as the final one and every chunk under its own index."""
    result = packager.build({"a.bin": os.urandom(3 * SMALL_CHUNK)})  # chunks 0-2
    real_open = ChunkCipher.open_into
    destination = tmp_path / "out"

    def open_not_final(cipher: ChunkCipher, index: int, *args: Any, **_: Any) -> int:
        return real_open(cipher, index, *args, final=False)

    monkeypatch.setattr(ChunkCipher, "open_into", open_not_final)
    with pytest.raises(ChunkAuthenticationError, match="payload chunk 2"):
        open_package(result.path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert_no_leftovers(destination)

    def open_shifted(cipher: ChunkCipher, index: int, *args: Any, final: bool) -> int:
        return real_open(cipher, index + 1, *args, final=final)

    monkeypatch.setattr(ChunkCipher, "open_into", open_shifted)
    with pytest.raises(ChunkAuthenticationError, match="payload chunk 0"):
        open_package(result.path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert_no_leftovers(destination)


def test_plaintext_beyond_the_manifest_is_refused_end_to_end(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = packager.build(FILES)
    last = len(result.header.payload.segment_sha256) - 1
    real_open = _SegmentOpener.open

    def open_with_extra(self: _SegmentOpener, index: int, slot: Any) -> memoryview:
        plaintext = real_open(self, index, slot)
        return memoryview(bytes(plaintext) + b"smuggled") if index == last else plaintext

    monkeypatch.setattr(_SegmentOpener, "open", open_with_extra)
    destination = tmp_path / "out"
    with pytest.raises(FileDigestError, match="bytes beyond the files in the manifest"):
        open_package(result.path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert_no_leftovers(destination)


def test_file_digests_check_each_file_and_the_stream_length() -> None:
    files = file_entries(b"abc", b"", b"defg", b"")
    digests = _FileDigests(files)
    digests.update(memoryview(b"abcde"))
    digests.update(memoryview(b"fg"))
    digests.finish()  # both empty files checked too

    with pytest.raises(FileDigestError, match="f2: SHA-256 of the decrypted file differs"):
        _FileDigests(files).update(memoryview(b"abcdeXg"))
    with pytest.raises(FileDigestError, match="bytes beyond the files in the manifest"):
        _FileDigests(files).update(memoryview(b"abcdefg!"))
    short = _FileDigests(files)
    short.update(memoryview(b"abcde"))
    with pytest.raises(FileDigestError, match="f2: payload ended before the file did"):
        short.finish()
    wrong_empty = _FileDigests((*file_entries(b"abc"), FileEntry("f1", 0, "ab" * 32)))
    wrong_empty.update(memoryview(b"abc"))
    with pytest.raises(FileDigestError, match="f1: SHA-256 of the decrypted file differs"):
        wrong_empty.finish()


def test_the_tree_writer_refuses_bytes_beyond_the_manifest(tmp_path: Path) -> None:
    from tensorguard.tgsp._parallel import Workers, Writeback

    files = file_entries(b"abc", b"", b"de", b"")
    created: list[str] = []

    def create(relative: str) -> Any:
        created.append(relative)
        return (tmp_path / relative).open("xb")

    with Workers(1) as workers, _TreeWriter(files, create, Writeback(workers, 0)) as writer:
        writer.write(memoryview(b"abcde"))
        with pytest.raises(FileDigestError, match="bytes beyond the files in the manifest"):
            writer.write(memoryview(b"!"))
        writer.finish()
    assert created == ["f0", "f1", "f2", "f3"]
    assert (tmp_path / "f2").read_bytes() == b"de"


def test_a_lane_uses_no_segment_after_a_failed_one() -> None:
    consumed: list[bytes] = []
    lane = _InOrder(lambda data: consumed.append(bytes(data)))
    good: Future[memoryview] = Future()
    good.set_result(memoryview(b"first"))
    failed: Future[memoryview] = Future()
    failed.set_exception(PayloadDigestError("segment 1 altered"))
    later: Future[memoryview] = Future()
    later.set_result(memoryview(b"third"))
    lane.feed(good)
    with pytest.raises(PayloadDigestError):
        lane.feed(failed)
    with pytest.raises(FileDigestError, match="an earlier payload segment failed"):
        lane.feed(later)
    assert consumed == [b"first"]


def test_segment_buffers_are_reused_whatever_the_payload_size(tmp_path: Path) -> None:
    """4 MiB in 1 KiB chunks and 64-chunk segments (64 segments) holds a few at a time."""
    import tracemalloc

    from tensorguard.crypto import TAG_SIZE
    from tensorguard.tgsp._format import Limits
    from tensorguard.tgsp._sealing import seal_files
    from tensorguard.tgsp._source import collect_source_files

    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    data = os.urandom(4 * 1024 * 1024)
    big.write_bytes(data)
    files = collect_source_files(big.parent, Limits())
    key, package_id = os.urandom(32), os.urandom(16)
    sealed_path = tmp_path / "sealed"
    with sealed_path.open("wb") as sink:
        entries, segment_sha256 = seal_files(
            files, sink, key, package_id, SMALL_CHUNK, threads=4, segment_chunks=64
        )
    count = len(data) // SMALL_CHUNK
    payload = PayloadInfo(SMALL_CHUNK, count, count * (SMALL_CHUNK + TAG_SIZE), 64, segment_sha256)
    out = tmp_path / "out"
    out.mkdir()
    with sealed_path.open("rb", buffering=0) as source:
        tracemalloc.start()
        try:
            open_segments(
                source,
                0,
                payload,
                entries,
                ChunkCipher(key, package_id, SMALL_CHUNK),
                lambda relative: (out / relative).open("xb"),
                threads=4,
            )
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert (out / "big.bin").read_bytes() == data
    slot = 64 * (2 * SMALL_CHUNK + TAG_SIZE)
    assert peak < 8 * slot + 256 * 1024, peak  # 5 segments in flight, not 64


def test_segment_readers_share_read_buffers_without_mixing_segments(tmp_path: Path) -> None:
    """Eight threads open 64 segments of 64 KiB through one shared read buffer: each gets its own
    segment's plaintext (a reader holds the buffer from read to decryption)."""
    from concurrent.futures import ThreadPoolExecutor

    from tensorguard.crypto import TAG_SIZE
    from tensorguard.tgsp._format import Limits
    from tensorguard.tgsp._sealing import seal_files
    from tensorguard.tgsp._source import collect_source_files
    from tensorguard.tgsp._unsealing import _Slot

    source = tmp_path / "src" / "data.bin"
    source.parent.mkdir()
    data = os.urandom(64 * 64 * SMALL_CHUNK)
    source.write_bytes(data)
    key, package_id = os.urandom(32), os.urandom(16)
    sealed_path = tmp_path / "sealed"
    with sealed_path.open("wb") as sink:
        _, segment_sha256 = seal_files(
            collect_source_files(source.parent, Limits()),
            sink,
            key,
            package_id,
            SMALL_CHUNK,
            threads=1,
            segment_chunks=64,
        )
    count = len(data) // SMALL_CHUNK
    payload = PayloadInfo(SMALL_CHUNK, count, count * (SMALL_CHUNK + TAG_SIZE), 64, segment_sha256)
    cipher = ChunkCipher(key, package_id, SMALL_CHUNK)
    with sealed_path.open("rb", buffering=0) as handle:
        segment_opener = _SegmentOpener(handle.fileno(), 0, payload, cipher, sealed_buffers=1)

        def plaintext(index: int) -> bytes:
            return bytes(segment_opener.open(index, _Slot(payload)))

        with ThreadPoolExecutor(8) as pool:
            opened = list(pool.map(plaintext, range(64)))
    assert b"".join(opened) == data
