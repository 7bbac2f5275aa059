"""The encrypted payload: all files, concatenated in manifest order, as one AEAD stream.

* payload key ``= HKDF-SHA256(ikm=data_key, salt=package_id,
  info=enc("TGSP-v3 payload key", suite))``;
* stream associated data ``= package_id`` (16 bytes), on top of the chunk counter and
  final flag the stream construction puts in every nonce;
* ``payload.segment_sha256`` in the header lists the SHA-256 of each segment of
  ``segment_chunks`` sealed chunks, so a verifier without keys checks the payload
  before anything is decrypted, hashing segments on several cores.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from typing import BinaryIO

from tensorguard.crypto import TAG_SIZE, AEADDecryptionError, ChunkCipher, encode_info, hkdf_sha256
from tensorguard.tgsp._errors import (
    ChunkAuthenticationError,
    PackageTruncatedError,
    PayloadDigestError,
)
from tensorguard.tgsp._format import PAYLOAD_KEY_LABEL, SUITE
from tensorguard.tgsp._header import PayloadInfo
from tensorguard.tgsp._parallel import Workers, chunks_in_flight, resolve_threads

VERIFY_BLOCK_SIZE = 1024 * 1024
"""Bytes each verifying thread reads (and hashes) at a time."""
_FADVISE = hasattr(os, "posix_fadvise")


def derive_payload_key(data_key: bytes, package_id: bytes) -> bytes:
    """Derive the single-use payload stream key from the package's data key."""
    return hkdf_sha256(
        data_key, salt=package_id, info=encode_info(PAYLOAD_KEY_LABEL, SUITE.encode("ascii"))
    )


def _read_into(source: BinaryIO, view: memoryview) -> None:
    """Fill ``view`` from ``source`` (one copy, no intermediate buffer)."""
    position = 0
    while position < len(view):
        count = source.readinto(view[position:])  # type: ignore[attr-defined]
        if not count:
            raise PackageTruncatedError("package ended inside its payload")
        position += count


def _sealed_chunk_sizes(payload: PayloadInfo) -> Iterator[int]:
    full = payload.sealed_chunk_size
    for _ in range(payload.chunk_count - 1):
        yield full
    yield payload.length - (payload.chunk_count - 1) * full


class _SegmentHasher:
    """Hashes one payload segment straight from the file with ``pread`` (no shared offset).

    Each worker thread keeps one read buffer, so memory is ``threads`` blocks whatever
    the package size; ``hashlib`` and ``pread`` release the GIL, so segments hash on
    several cores at once.
    """

    def __init__(self, fd: int, payload_offset: int, payload: PayloadInfo) -> None:
        self._fd = fd
        self._offset = payload_offset
        self._payload = payload
        self._buffers = threading.local()

    def _buffer(self) -> memoryview:
        buffer: memoryview | None = getattr(self._buffers, "view", None)
        if buffer is None:
            buffer = memoryview(bytearray(VERIFY_BLOCK_SIZE))
            self._buffers.view = buffer
        return buffer

    def matches(self, index: int) -> bool:
        """True if segment ``index``'s SHA-256 equals its signed digest."""
        start, length = self._payload.segment_span(index)
        position = self._offset + start
        if _FADVISE:
            os.posix_fadvise(self._fd, position, length, os.POSIX_FADV_WILLNEED)
        buffer = self._buffer()
        digest = hashlib.sha256()
        end = position + length
        while position < end:
            view = buffer[: min(len(buffer), end - position)]
            count = os.preadv(self._fd, [view], position)
            if not count:
                raise PackageTruncatedError("package ended inside its payload")
            digest.update(view[:count])
            position += count
        return hmac.compare_digest(digest.hexdigest(), self._payload.segment_sha256[index])


def check_payload_digest(
    source: BinaryIO, payload_offset: int, payload: PayloadInfo, threads: int | None = None
) -> None:
    """Hash every payload segment of the open file ``source``; raise if one differs.

    Segments are hashed on worker threads (independent ``pread`` calls, so the file
    position is not used) and checked against the signed list in segment order, so the
    first altered segment is the one reported. At most ``2 * threads`` segments are
    queued at a time.
    """
    workers_count = resolve_threads(threads)
    hasher = _SegmentHasher(source.fileno(), payload_offset, payload)
    segments = len(payload.segment_sha256)
    pending: deque[tuple[int, Future[bool]]] = deque()
    with Workers(workers_count) as workers:
        for index in range(segments):
            pending.append((index, workers.submit(hasher.matches, index)))
            while pending and (len(pending) > 2 * workers_count or index == segments - 1):
                checked, matched = pending.popleft()
                if not matched.result():
                    raise PayloadDigestError(
                        f"payload segment {checked} of {segments}: SHA-256 does not match "
                        "the signed header; the encrypted payload was altered, reordered "
                        "or spliced"
                    )


def decrypt_payload(
    source: BinaryIO,
    payload: PayloadInfo,
    key: bytes,
    package_id: bytes,
    threads: int | None = None,
) -> Generator[memoryview, None, None]:
    """Yield plaintext chunk by chunk, in order; each is authenticated before it is yielded.

    Chunks are read ahead and opened on worker threads (each under its own index and
    final flag) into reused buffers, then handed out in chunk order, so the first failing
    chunk is the one reported. A yielded view is valid until the next chunk is
    requested. The last chunk is opened as the final one, so a stream cut short fails
    there; callers must still treat output as provisional until the generator finishes
    without raising. The payload digest is not recomputed here: a change to the file
    after verification either fails AES-GCM (without the data key) or changes the
    plaintext, which the signed per-file digests catch.
    """
    workers_count = resolve_threads(threads)
    cipher = ChunkCipher(key, package_id, payload.chunk_size)
    depth = chunks_in_flight(workers_count, payload.chunk_size)
    last_index = payload.chunk_count - 1
    spare: list[tuple[bytearray, bytearray]] = []
    pending: deque[tuple[int, tuple[bytearray, bytearray], int, Future[int]]] = deque()

    def settle() -> tuple[tuple[bytearray, bytearray], memoryview]:
        index, buffers, size, opened = pending.popleft()
        try:
            opened.result()
        except AEADDecryptionError as exc:
            raise ChunkAuthenticationError(f"payload chunk {index}: {exc}") from exc
        return buffers, memoryview(buffers[1])[:size]

    with Workers(workers_count) as workers:
        for index, sealed_size in enumerate(_sealed_chunk_sizes(payload)):
            if len(pending) >= depth:
                buffers, plaintext = settle()
                yield plaintext
                spare.append(buffers)  # the consumer asked for more: it is done with it
            buffers = (
                spare.pop()
                if spare
                else (
                    bytearray(payload.chunk_size + TAG_SIZE),
                    bytearray(payload.chunk_size),
                )
            )
            sealed = memoryview(buffers[0])[:sealed_size]
            plain = memoryview(buffers[1])[: sealed_size - TAG_SIZE]
            _read_into(source, sealed)
            opened = workers.submit(
                cipher.open_into, index, sealed, plain, final=index == last_index
            )
            pending.append((index, buffers, len(plain), opened))
        while pending:
            buffers, plaintext = settle()
            yield plaintext
            spare.append(buffers)
