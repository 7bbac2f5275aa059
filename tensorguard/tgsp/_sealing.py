"""Sealing a package's files into its payload: read once, hash, encrypt, write in order.

The files are read, in manifest order, straight into chunk-sized buffers (one copy from
the page cache, no re-buffering). For each chunk:

* the reading thread updates the SHA-256 of each file the chunk covers (files in order);
* meanwhile a pool worker seals the chunk into a second buffer (AES-GCM under its index
  and final flag; :meth:`~tensorguard.crypto._stream_aead.ChunkCipher.seal_into`);
* lane 0 writes the sealed chunk and lane 1 hashes it into its segment's SHA-256
  (chunks in order; a segment is ``segment_chunks`` consecutive sealed chunks);
* lane 2 flushes what was written to disk every 64 MiB
  (:class:`~tensorguard.tgsp._parallel.Writeback`), so the package's final fsync is short.

The two buffers are reused once the write is done (no allocation per chunk); at most
:func:`~tensorguard.tgsp._parallel.chunks_in_flight` chunks are in flight. The output is
the same bytes as sealing the concatenated files with one
:class:`~tensorguard.crypto._stream_aead.StreamEncryptor`, whatever the thread count.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import deque
from concurrent.futures import Future
from contextlib import ExitStack
from typing import BinaryIO

from tensorguard.crypto import TAG_SIZE, ChunkCipher, chunk_count
from tensorguard.tgsp._errors import BuildError, SourceChangedError
from tensorguard.tgsp._header import FileEntry, segment_count
from tensorguard.tgsp._parallel import Workers, Writeback, chunks_in_flight, resolve_threads
from tensorguard.tgsp._source import SourceFile, open_source_file

Part = tuple[int, int, int]
"""(file index, start, end) of a file's bytes inside a chunk buffer."""


class _FileReader:
    """Reads the concatenation of the listed files, refusing any that changed size."""

    def __init__(self, files: list[SourceFile]) -> None:
        self._files = files
        self._next = 0
        self._current = -1
        self._remaining = 0
        self._open = ExitStack()
        self._handle: io.FileIO | None = None

    def __enter__(self) -> _FileReader:
        return self

    def __exit__(self, *_: object) -> None:
        self._open.close()

    def _advance(self) -> None:
        """Open the next file that still has bytes to give (checking empty ones on the way)."""
        while self._remaining == 0:
            self._close_current()
            if self._next >= len(self._files):
                raise BuildError("internal error: more payload bytes than the files hold")
            self._current = self._next
            self._next += 1
            item = self._files[self._current]
            handle = self._open.enter_context(open_source_file(item))
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            self._handle = handle
            self._remaining = item.size

    def _close_current(self) -> None:
        if self._handle is None:
            return
        if self._handle.read(1):
            raise SourceChangedError(f"{self._files[self._current].location} grew during packaging")
        self._open.close()
        self._handle = None

    def fill(self, view: memoryview) -> list[Part]:
        """Fill all of ``view`` with the next bytes; return which file each part is from."""
        parts: list[Part] = []
        position = 0
        while position < len(view):
            self._advance()
            assert self._handle is not None
            wanted = min(len(view) - position, self._remaining)
            count = self._handle.readinto(view[position : position + wanted])
            if not count:
                raise SourceChangedError(
                    f"{self._files[self._current].location} shrank during packaging"
                )
            parts.append((self._current, position, position + count))
            position += count
            self._remaining -= count
        return parts

    def finish(self) -> None:
        """Check the last file did not grow, and open and check any trailing empty files."""
        self._close_current()
        for index in range(self._next, len(self._files)):
            item = self._files[index]
            if item.size:
                raise BuildError("internal error: files hold more bytes than the payload")
            with open_source_file(item) as handle:
                if handle.read(1):
                    raise SourceChangedError(f"{item.location} grew during packaging")
        self._next = len(self._files)


def _hash_parts(digests: list[hashlib._Hash], view: memoryview, parts: list[Part]) -> None:
    for index, start, end in parts:
        digests[index].update(view[start:end])


def _write_sealed(
    sealing: Future[int],
    sealed: memoryview,
    sink: BinaryIO,
    writeback: Writeback,
    sink_fd: int | None,
) -> None:
    sealing.result()
    sink.write(sealed)
    if sink_fd is not None:
        writeback.wrote(sink_fd, len(sealed))


def _descriptor(sink: BinaryIO) -> int | None:
    """The sink's file descriptor, or None for an in-memory sink (nothing to flush)."""
    try:
        return sink.fileno()
    except OSError:  # io.UnsupportedOperation: BytesIO and other in-memory sinks
        return None


class _SegmentDigests:
    """SHA-256 of each run of ``segment_chunks`` sealed chunks, fed chunk by chunk in order."""

    def __init__(self, segment_chunks: int) -> None:
        self._segment_chunks = segment_chunks
        self._current = hashlib.sha256()
        self._next_index = 0
        self.digests: list[str] = []

    def add(self, sealing: Future[int], index: int, sealed: memoryview) -> None:
        """Hash sealed chunk ``index`` once it is sealed (chunks must come in order)."""
        sealing.result()
        if index != self._next_index:
            raise BuildError(f"internal error: sealed chunk {index} hashed out of order")
        if index and index % self._segment_chunks == 0:
            self.digests.append(self._current.hexdigest())
            self._current = hashlib.sha256()
        self._current.update(sealed)
        self._next_index += 1

    def finish(self) -> tuple[str, ...]:
        """Close the last segment; return every segment's digest (hex), in order."""
        return (*self.digests, self._current.hexdigest())


def seal_files(
    files: list[SourceFile],
    sink: BinaryIO,
    key: bytes,
    package_id: bytes,
    chunk_size: int,
    threads: int | None = None,
    *,
    segment_chunks: int,
) -> tuple[tuple[FileEntry, ...], tuple[str, ...]]:
    """Seal ``files`` into ``sink`` at its position; return the manifest and segment digests.

    Segment ``i``'s digest is the SHA-256 of sealed chunks ``i * segment_chunks`` up to
    ``(i + 1) * segment_chunks``. ``threads``: worker threads (see
    :func:`~tensorguard.tgsp._parallel.resolve_threads`).
    Raises :class:`SourceChangedError` if a file changed size or identity while read.
    """
    workers_count = resolve_threads(threads)
    total = sum(item.size for item in files)
    count = chunk_count(total, chunk_size)
    cipher = ChunkCipher(key, package_id, chunk_size)
    digests = [hashlib.sha256() for _ in files]
    segments = _SegmentDigests(segment_chunks)
    depth = chunks_in_flight(workers_count, chunk_size)
    spare: list[tuple[bytearray, bytearray]] = []
    pending: deque[tuple[tuple[bytearray, bytearray], Future[None], Future[None]]] = deque()

    def settle() -> None:
        buffers, written, hashed = pending.popleft()
        written.result()
        hashed.result()
        spare.append(buffers)

    sink_fd = _descriptor(sink)
    workers = Workers(workers_count, lanes=3)
    # Writeback exits last: after the lanes stopped, it closes what they never flushed.
    with Writeback(workers, lane=2) as writeback, workers, _FileReader(files) as reader:
        for index in range(count):
            if len(pending) >= depth:
                settle()
            buffers = (
                spare.pop() if spare else (bytearray(chunk_size), bytearray(chunk_size + TAG_SIZE))
            )
            size = min(chunk_size, total - index * chunk_size)
            plain = memoryview(buffers[0])[:size]
            sealed = memoryview(buffers[1])[: size + TAG_SIZE]
            parts = reader.fill(plain)
            sealing = workers.submit(
                cipher.seal_into, index, plain, sealed, final=index == count - 1
            )
            written = workers.in_lane(0, _write_sealed, sealing, sealed, sink, writeback, sink_fd)
            hashed = workers.in_lane(1, segments.add, sealing, index, sealed)
            _hash_parts(digests, plain, parts)  # here, while a worker seals the chunk
            pending.append((buffers, written, hashed))
        reader.finish()
        while pending:
            settle()
        writeback.finish()
    entries = tuple(
        FileEntry(item.archive_path, item.size, digest.hexdigest())
        for item, digest in zip(files, digests, strict=True)
    )
    digests_of_segments = segments.finish()
    if len(digests_of_segments) != segment_count(count, segment_chunks):
        raise BuildError("internal error: segment count differs from the payload geometry")
    return entries, digests_of_segments
