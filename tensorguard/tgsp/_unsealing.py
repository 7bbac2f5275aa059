"""Opening a TGSP v3 payload in one pass: each segment is read once, checked, then decrypted.

For every payload segment (``segment_chunks`` sealed chunks, about 16 MiB):

1. a pool worker reads the sealed segment with ``pread`` into a segment buffer (one copy
   from the page cache), hashes it and compares the SHA-256 with the signed digest in the
   header; only when they are equal does it open the segment's chunks (AES-GCM, each under
   its index and final flag) into a plaintext buffer. Those are the very bytes that were
   hashed: nothing is read from the file again, so a change to the file after this point
   cannot reach the plaintext;
2. lane 0 feeds the plaintext, in stream order, to each file's SHA-256 and compares it
   with the signed manifest as soon as the file's last byte is in;
3. lane 1 writes the plaintext into the manifest's files (created ``O_EXCL |
   O_NOFOLLOW``), in order; lane 2 flushes written data to disk
   (:class:`~tensorguard.tgsp._parallel.Writeback`).

A lane starts on a segment only after its pool task returned, that is after the segment's
digest matched and every chunk in it authenticated; a failed segment is neither hashed nor
written, and after any failure a lane refuses all later segments. The first failure in
stream order is raised. ``hashlib``, ``pread``, AES-GCM and ``write`` release the GIL on
large buffers, so reading, both hashes, decryption and writing overlap on several cores.

Memory is one plaintext buffer per segment in flight plus one sealed read buffer per
segment being read and checked (one fewer than the segments in flight), at most
:data:`OPEN_BUFFER_BYTES` in all; :func:`fits_single_pass` says whether a payload's
segments are small enough (the builder's default always is; a payload of more than about
1 TiB, whose segments grow, is opened by the two-pass path of
:mod:`tensorguard.tgsp._opener`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import queue
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import BinaryIO

from tensorguard.crypto import TAG_SIZE, AEADDecryptionError, ChunkCipher
from tensorguard.tgsp._errors import (
    ChunkAuthenticationError,
    FileDigestError,
    PackageTruncatedError,
    PayloadDigestError,
)
from tensorguard.tgsp._header import FileEntry, PayloadInfo
from tensorguard.tgsp._parallel import Workers, Writeback

SINGLE_PASS_SEGMENT_BYTES = 17 * 1024 * 1024
"""Largest sealed segment opened in one pass (the default 16 MiB segment plus its tags)."""
OPEN_BUFFER_BYTES = 4 * SINGLE_PASS_SEGMENT_BYTES
"""Segment buffers (sealed plus plaintext) held at most: two segments in flight."""
WRITE_PIECE = 1024 * 1024
"""Bytes per ``write`` call: on Linux, writes of 4 MiB and more into the page cache cost
several times the system time of 1 MiB writes (measured on the benchmark machine)."""
_FADVISE = hasattr(os, "posix_fadvise")

CreateFile = Callable[[str], BinaryIO]
"""Creates the new file at a manifest path (and its directories) and opens it for writing."""


def fits_single_pass(payload: PayloadInfo) -> bool:
    """True if every segment of ``payload`` fits the one-pass opener's buffers."""
    return payload.segment_bytes <= SINGLE_PASS_SEGMENT_BYTES


def segments_in_flight(threads: int, payload: PayloadInfo) -> int:
    """Segments read ahead at once: 1 serially, else enough for the threads within the budget."""
    if threads == 1:
        return 1
    slot = payload.segment_bytes + payload.segment_chunks * payload.chunk_size
    return max(2, min(threads + 1, OPEN_BUFFER_BYTES // slot))


class _Slot:
    """The plaintext buffer of one segment in flight (held until its lanes are done)."""

    def __init__(self, payload: PayloadInfo) -> None:
        self.plain = bytearray(payload.segment_chunks * payload.chunk_size)


class _SegmentOpener:
    """Reads, checks and decrypts segments (several threads may call it at once).

    A sealed segment is needed only until it is decrypted, so ``sealed_buffers`` read
    buffers are shared by all calls (a call waits for one; a holder never waits for
    anything, so this cannot deadlock) while each segment's plaintext buffer is held until
    its lanes are done.
    """

    def __init__(
        self,
        fd: int,
        payload_offset: int,
        payload: PayloadInfo,
        cipher: ChunkCipher,
        sealed_buffers: int = 1,
    ) -> None:
        self._fd = fd
        self._offset = payload_offset
        self._payload = payload
        self._cipher = cipher
        self._segments = len(payload.segment_sha256)
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(sealed_buffers):
            self._free.put(bytearray(payload.segment_bytes))

    def _read(self, index: int, buffer: bytearray) -> memoryview:
        start, length = self._payload.segment_span(index)
        position = self._offset + start
        sealed = memoryview(buffer)[:length]
        done = 0
        while done < length:
            count = os.preadv(self._fd, [sealed[done:]], position + done)
            if not count:
                raise PackageTruncatedError("package ended inside its payload")
            done += count
        if _FADVISE and index + 1 < self._segments:  # start reading the next one from disk
            next_start, next_length = self._payload.segment_span(index + 1)
            os.posix_fadvise(
                self._fd, self._offset + next_start, next_length, os.POSIX_FADV_WILLNEED
            )
        return sealed

    def _check(self, index: int, sealed: memoryview) -> None:
        """Raise :class:`PayloadDigestError` unless ``sealed`` is segment ``index`` as signed."""
        digest = hashlib.sha256(sealed).hexdigest()
        if not hmac.compare_digest(digest, self._payload.segment_sha256[index]):
            raise PayloadDigestError(
                f"payload segment {index} of {self._segments}: SHA-256 does not match the "
                "signed header; the encrypted payload was altered, reordered or spliced"
            )

    def open(self, index: int, slot: _Slot) -> memoryview:
        """Return segment ``index``'s plaintext; raise unless its digest and every chunk check.

        The segment's SHA-256 is compared before any of its bytes is decrypted.
        """
        buffer = self._free.get()
        try:
            return self._open(index, self._read(index, buffer), slot)
        finally:
            self._free.put(buffer)

    def _open(self, index: int, sealed: memoryview, slot: _Slot) -> memoryview:
        self._check(index, sealed)
        payload = self._payload
        sealed_size = payload.sealed_chunk_size
        first = index * payload.segment_chunks
        last = payload.chunk_count - 1
        plain = memoryview(slot.plain)
        produced = 0
        for offset in range(0, len(sealed), sealed_size):
            chunk = first + offset // sealed_size
            piece = sealed[offset : offset + sealed_size]
            out = plain[produced : produced + len(piece) - TAG_SIZE]
            try:
                self._cipher.open_into(chunk, piece, out, final=chunk == last)
            except AEADDecryptionError as exc:
                raise ChunkAuthenticationError(f"payload chunk {chunk}: {exc}") from exc
            produced += len(out)
        return plain[:produced]


class _FileDigests:
    """Each file's SHA-256 over the plaintext stream, checked when the file's last byte is in."""

    def __init__(self, files: tuple[FileEntry, ...]) -> None:
        self._files = files
        self._next = 0
        self._entry: FileEntry | None = None
        self._digest = hashlib.sha256()
        self._remaining = 0

    def _check(self) -> None:
        assert self._entry is not None
        if not hmac.compare_digest(self._digest.hexdigest(), self._entry.sha256):
            raise FileDigestError(
                f"{self._entry.path}: SHA-256 of the decrypted file differs from the signed "
                "manifest"
            )

    def _start_next(self) -> None:
        """Move to the next file with bytes to come, checking empty files on the way."""
        while self._remaining == 0:
            if self._next == len(self._files):
                raise FileDigestError("payload holds bytes beyond the files in the manifest")
            self._entry = self._files[self._next]
            self._next += 1
            self._digest = hashlib.sha256()
            self._remaining = self._entry.size
            if not self._remaining:
                self._check()

    def update(self, data: memoryview) -> None:
        """Hash the next plaintext bytes of the stream into the files they belong to."""
        while data:
            if self._remaining == 0:
                self._start_next()
            piece = data[: self._remaining]
            self._digest.update(piece)
            self._remaining -= len(piece)
            data = data[len(piece) :]
            if self._remaining == 0:
                self._check()

    def finish(self) -> None:
        """The stream ended: every file must be complete (empty trailing files are checked)."""
        if self._remaining:
            assert self._entry is not None
            raise FileDigestError(f"{self._entry.path}: payload ended before the file did")
        for entry in self._files[self._next :]:
            if entry.size:
                raise FileDigestError(f"{entry.path}: payload ended before the file did")
            self._entry, self._digest = entry, hashlib.sha256()
            self._check()
        self._next = len(self._files)


class _TreeWriter:
    """Writes the plaintext stream into the manifest's files, creating each in order.

    A context manager: on exit it closes the file still open (after a failure).
    """

    def __init__(
        self, files: tuple[FileEntry, ...], create: CreateFile, writeback: Writeback
    ) -> None:
        self._files = files
        self._create = create
        self._writeback = writeback
        self._next = 0
        self._sink: BinaryIO | None = None
        self._remaining = 0

    def __enter__(self) -> _TreeWriter:
        return self

    def __exit__(self, *_: object) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _close_current(self) -> None:
        if self._sink is None:
            return
        self._sink.flush()
        self._writeback.file_done(self._sink.fileno())
        self._sink.close()
        self._sink = None

    def _start_next(self) -> None:
        while self._remaining == 0:
            if self._next == len(self._files):
                raise FileDigestError("payload holds bytes beyond the files in the manifest")
            entry = self._files[self._next]
            self._next += 1
            self._sink = self._create(entry.path)
            self._remaining = entry.size
            if not self._remaining:
                self._close_current()

    def write(self, data: memoryview) -> None:
        """Write the next plaintext bytes of the stream into the files they belong to."""
        while data:
            if self._remaining == 0:
                self._start_next()
            assert self._sink is not None
            piece = data[: min(self._remaining, WRITE_PIECE)]
            self._sink.write(piece)
            self._writeback.wrote(self._sink.fileno(), len(piece))
            self._remaining -= len(piece)
            data = data[len(piece) :]
            if self._remaining == 0:
                self._close_current()

    def finish(self) -> None:
        """The stream ended: create the trailing empty files; every file must be complete."""
        if self._remaining:
            raise FileDigestError(
                f"{self._files[self._next - 1].path}: payload ended before the file did"
            )
        for entry in self._files[self._next :]:
            if entry.size:
                raise FileDigestError(f"{entry.path}: payload ended before the file did")
            self._create(entry.path).close()
        self._next = len(self._files)


class _InOrder:
    """Hands each segment's plaintext to one consumer, in order; stops at the first failure.

    Runs on a lane. Waits for the segment's pool task; if that raised (digest mismatch,
    failed chunk, read error) the same error is raised here and nothing is consumed. Once
    any call failed, later segments are refused too, so the consumer never sees a stream
    with a hole in it.
    """

    def __init__(self, consume: Callable[[memoryview], None]) -> None:
        self._consume = consume
        self._failed = False

    def feed(self, opened: Future[memoryview]) -> None:
        """Consume the plaintext of ``opened`` once it is verified and decrypted."""
        if self._failed:
            raise FileDigestError("an earlier payload segment failed; this one was not used")
        try:
            self._consume(opened.result())
        except BaseException:
            self._failed = True
            raise


def open_segments(
    source: BinaryIO,
    payload_offset: int,
    payload: PayloadInfo,
    files: tuple[FileEntry, ...],
    cipher: ChunkCipher,
    create: CreateFile,
    threads: int,
) -> None:
    """Check, decrypt and write the whole payload of ``source`` in one pass.

    ``create(path)`` makes each manifest file (its caller owns the directory, and removes
    it if this raises). Raises :class:`PayloadDigestError` for the first segment whose
    SHA-256 differs from the signed list, :class:`ChunkAuthenticationError` for a chunk
    that fails AES-GCM, :class:`FileDigestError` for a file whose plaintext differs from the
    manifest, :class:`OSError` for a failed read or write. Requires
    :func:`fits_single_pass` (``payload``).
    """
    if not fits_single_pass(payload):
        raise ValueError("segments too large for the one-pass opener; use the two-pass path")
    depth = segments_in_flight(threads, payload)
    # One fewer read buffer than segments in flight: one segment is always in the lanes.
    opener = _SegmentOpener(source.fileno(), payload_offset, payload, cipher, max(1, depth - 1))
    digests = _FileDigests(files)
    spare: list[_Slot] = []
    pending: deque[tuple[_Slot, Future[memoryview], Future[None], Future[None]]] = deque()

    def settle() -> None:
        slot, opened, hashed, written = pending.popleft()
        opened.result()  # the segment's own failure first, then what its lanes found
        hashed.result()
        written.result()
        spare.append(slot)

    workers = Workers(threads, lanes=3)
    # Exit order: the lanes stop first, then the writer closes its file, then Writeback
    # closes the descriptors of flushes that never ran.
    with (
        Writeback(workers, lane=2) as writeback,
        _TreeWriter(files, create, writeback) as writer,
        workers,
    ):
        hashing, writing = _InOrder(digests.update), _InOrder(writer.write)
        for index in range(len(payload.segment_sha256)):
            if len(pending) >= depth:
                settle()
            slot = spare.pop() if spare else _Slot(payload)
            opened = workers.submit(opener.open, index, slot)
            hashed = workers.in_lane(0, hashing.feed, opened)
            written = workers.in_lane(1, writing.feed, opened)
            pending.append((slot, opened, hashed, written))
        while pending:
            settle()
        digests.finish()
        writer.finish()
        writeback.finish()
