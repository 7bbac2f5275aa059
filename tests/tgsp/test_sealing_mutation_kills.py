"""Sealing files into a payload, checked against an independent sequential seal (#18 item 6).

``tensorguard/tgsp/_sealing.py`` reads, hashes and seals on several threads; whatever the
thread count, its output must be the bytes one ``StreamEncryptor`` writes for the
concatenated files, its manifest each file's size and SHA-256, and its segment list the
SHA-256 of each run of ``segment_chunks`` sealed chunks. A source file that grows or
shrinks while it is being read is refused, naming the file. Real files in a temporary
directory; the one stand-in is a sink that changes a source file as it is written to,
the only way to change a file after it was opened and checked without a race.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import pytest

from tensorguard.crypto import TAG_SIZE, StreamEncryptor
from tensorguard.tgsp import BuildError, SourceChangedError
from tensorguard.tgsp._format import DEFAULT_LIMITS
from tensorguard.tgsp._sealing import seal_files
from tensorguard.tgsp._source import SourceFile, collect_source_files
from tests.tgsp.conftest import make_tree

KEY = bytes(range(32))
PACKAGE_ID = bytes(range(200, 216))
CHUNK = 1024


def sources(root: Path, files: dict[str, bytes]) -> list[SourceFile]:
    return collect_source_files(make_tree(root, files), DEFAULT_LIMITS)


def reference_seal(plaintext: bytes, chunk_size: int = CHUNK) -> bytes:
    """The payload as one sequential stream encryptor writes it."""
    encryptor = StreamEncryptor(KEY, PACKAGE_ID, chunk_size)
    pieces = [
        plaintext[start : start + chunk_size] for start in range(0, len(plaintext), chunk_size)
    ]
    pieces = pieces or [b""]
    return b"".join(
        encryptor.encrypt_chunk(piece, final=index == len(pieces) - 1)
        for index, piece in enumerate(pieces)
    )


def segment_digests(sealed: bytes, segment_chunks: int, chunk_size: int = CHUNK) -> tuple[str, ...]:
    span = segment_chunks * (chunk_size + TAG_SIZE)
    return tuple(
        hashlib.sha256(sealed[start : start + span]).hexdigest()
        for start in range(0, max(len(sealed), 1), span)
    )


FILES = {
    "a/first.bin": os.urandom(3 * CHUNK + 100),
    "a/empty": b"",
    "b.bin": os.urandom(CHUNK - 100),  # ends exactly on a chunk boundary
    "c/d/e.bin": os.urandom(2 * CHUNK + 1),
    "c/empty-too": b"",
    "z.txt": b"z",
}


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("segment_chunks", [1, 2, 3, 100])
def test_the_payload_equals_a_sequential_seal_of_the_concatenated_files(
    tmp_path: Path, threads: int, segment_chunks: int
) -> None:
    listed = sources(tmp_path / "src", FILES)
    sink = io.BytesIO()
    entries, digests = seal_files(
        listed, sink, KEY, PACKAGE_ID, CHUNK, threads, segment_chunks=segment_chunks
    )
    plaintext = b"".join(FILES[name] for name in sorted(FILES))
    expected = reference_seal(plaintext)
    assert len(expected) == 6 * (CHUNK + TAG_SIZE) + 2 + TAG_SIZE
    assert sink.getvalue() == expected
    assert digests == segment_digests(expected, segment_chunks)
    assert [(e.path, e.size, e.sha256) for e in entries] == [
        (name, len(FILES[name]), hashlib.sha256(FILES[name]).hexdigest()) for name in sorted(FILES)
    ]


@pytest.mark.parametrize("threads", [1, 2])
def test_a_real_file_sink_is_written_from_its_position(tmp_path: Path, threads: int) -> None:
    listed = sources(tmp_path / "src", FILES)
    target = tmp_path / "payload.bin"
    with target.open("w+b") as sink:
        sink.write(b"PREFIX")
        entries, digests = seal_files(
            listed, sink, KEY, PACKAGE_ID, CHUNK, threads, segment_chunks=2
        )
    plaintext = b"".join(FILES[name] for name in sorted(FILES))
    assert target.read_bytes() == b"PREFIX" + reference_seal(plaintext)
    assert len(entries) == len(FILES)
    assert len(digests) == 4


def test_exact_chunk_multiples_and_a_single_chunk(tmp_path: Path) -> None:
    for size in (CHUNK, 4 * CHUNK, 1, CHUNK - 1, CHUNK + 1):
        content = os.urandom(size)
        listed = sources(tmp_path / f"src{size}", {"only.bin": content})
        sink = io.BytesIO()
        entries, digests = seal_files(listed, sink, KEY, PACKAGE_ID, CHUNK, 2, segment_chunks=2)
        assert sink.getvalue() == reference_seal(content)
        assert digests == segment_digests(sink.getvalue(), 2)
        assert entries[0].sha256 == hashlib.sha256(content).hexdigest()


@pytest.mark.parametrize("threads", [1, 2])
def test_only_empty_files_seal_to_one_empty_final_chunk(tmp_path: Path, threads: int) -> None:
    listed = sources(tmp_path / "src", {"a": b"", "b/c": b""})
    sink = io.BytesIO()
    entries, digests = seal_files(listed, sink, KEY, PACKAGE_ID, CHUNK, threads, segment_chunks=4)
    assert sink.getvalue() == reference_seal(b"")
    assert len(sink.getvalue()) == TAG_SIZE
    assert digests == (hashlib.sha256(sink.getvalue()).hexdigest(),)
    empty = hashlib.sha256(b"").hexdigest()
    assert [(e.path, e.size, e.sha256) for e in entries] == [("a", 0, empty), ("b/c", 0, empty)]


def test_no_files_at_all_is_one_empty_chunk() -> None:
    sink = io.BytesIO()
    entries, digests = seal_files([], sink, KEY, PACKAGE_ID, CHUNK, 1, segment_chunks=1)
    assert entries == ()
    assert sink.getvalue() == reference_seal(b"")
    assert len(digests) == 1


class ChangingSink(io.BytesIO):
    """A sink that, at its ``at``-th write, appends to or truncates a source file."""

    def __init__(self, victim: Path, at: int, *, grow: bool) -> None:
        super().__init__()
        self.victim = victim
        self.at = at
        self.grow = grow
        self.writes = 0

    def write(self, data: object) -> int:
        self.writes += 1
        if self.writes == self.at:
            if self.grow:
                with self.victim.open("ab") as handle:
                    handle.write(b"more")
            else:
                os.truncate(self.victim, CHUNK + 10)
        return super().write(data)  # type: ignore[arg-type]


def _seal_with(sink: io.BytesIO, listed: list[SourceFile]) -> None:
    seal_files(listed, sink, KEY, PACKAGE_ID, CHUNK, 1, segment_chunks=2)


def test_a_file_that_grows_while_read_is_refused_by_name(tmp_path: Path) -> None:
    listed = sources(tmp_path / "src", {"a.bin": os.urandom(3 * CHUNK), "b.bin": b"b"})
    victim = tmp_path / "src" / "a.bin"
    with pytest.raises(SourceChangedError) as caught:
        _seal_with(ChangingSink(victim, 1, grow=True), listed)
    assert str(caught.value) == f"{victim} grew during packaging"


def test_the_last_file_growing_is_refused_by_name(tmp_path: Path) -> None:
    listed = sources(tmp_path / "src", {"a.bin": b"a", "z.bin": os.urandom(2 * CHUNK)})
    victim = tmp_path / "src" / "z.bin"
    with pytest.raises(SourceChangedError) as caught:
        _seal_with(ChangingSink(victim, 1, grow=True), listed)
    assert str(caught.value) == f"{victim} grew during packaging"


def test_the_last_file_growing_after_its_last_chunk_is_refused(tmp_path: Path) -> None:
    listed = sources(tmp_path / "src", {"z.bin": os.urandom(2 * CHUNK)})
    victim = tmp_path / "src" / "z.bin"
    with pytest.raises(SourceChangedError) as caught:
        _seal_with(ChangingSink(victim, 2, grow=True), listed)
    assert str(caught.value) == f"{victim} grew during packaging"


def test_a_file_that_shrinks_while_read_is_refused_by_name(tmp_path: Path) -> None:
    listed = sources(tmp_path / "src", {"a.bin": os.urandom(4 * CHUNK), "b.bin": b"b"})
    victim = tmp_path / "src" / "a.bin"
    with pytest.raises(SourceChangedError) as caught:
        _seal_with(ChangingSink(victim, 1, grow=False), listed)
    assert type(caught.value) is SourceChangedError
    assert str(caught.value) == f"{victim} shrank during packaging"


def test_an_empty_file_that_gained_bytes_before_it_was_read_is_refused(tmp_path: Path) -> None:
    listed = sources(tmp_path / "src", {"a.bin": os.urandom(2 * CHUNK), "b": b""})
    victim = tmp_path / "src" / "b"
    with pytest.raises(SourceChangedError, match="was replaced or resized during packaging"):
        _seal_with(ChangingSink(victim, 1, grow=True), listed)


def test_a_listing_that_does_not_add_up_is_an_internal_error(tmp_path: Path) -> None:
    listed = sources(tmp_path / "src", {"a.bin": os.urandom(10)})
    wrong = SourceFile("a.bin", listed[0].location, 20, listed[0].device, listed[0].inode)
    with pytest.raises(SourceChangedError, match="was replaced or resized during packaging"):
        _seal_with(io.BytesIO(), [wrong])
    assert issubclass(SourceChangedError, BuildError)


def test_an_in_memory_sink_takes_more_than_a_flush_interval_on_threads(tmp_path: Path) -> None:
    """Past 64 MiB the file writeback starts flushing; a sink without a descriptor is skipped."""
    root = tmp_path / "src"
    root.mkdir()
    size = 65 * 1024 * 1024
    (root / "zeros.bin").touch()
    os.truncate(root / "zeros.bin", size)  # sparse: read back as zeros at once
    listed = collect_source_files(root, DEFAULT_LIMITS)
    sink = io.BytesIO()
    chunk = 1024 * 1024
    entries, digests = seal_files(listed, sink, KEY, PACKAGE_ID, chunk, 2, segment_chunks=16)
    assert sink.tell() == size + 65 * TAG_SIZE
    assert entries[0].size == size
    assert len(digests) == 5


@pytest.mark.parametrize("position", ["last", "middle"])
def test_a_file_listed_as_empty_that_reads_bytes_is_refused(tmp_path: Path, position: str) -> None:
    """procfs files stat as 0 bytes but read content: packaging one is refused by name."""
    proc_file = Path(f"/proc/{os.getpid()}/status")
    (listed_proc,) = collect_source_files(proc_file, DEFAULT_LIMITS)
    assert listed_proc.size == 0
    real = sources(tmp_path / "src", {"a.bin": os.urandom(CHUNK + 5), "z.bin": b"z"})
    listed = [real[0], listed_proc] if position == "last" else [real[0], listed_proc, real[1]]
    with pytest.raises(SourceChangedError) as caught:
        _seal_with(io.BytesIO(), listed)
    assert str(caught.value) == f"{proc_file} grew during packaging"
