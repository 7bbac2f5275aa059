"""The encrypted payload: all files, concatenated in manifest order, as one AEAD stream.

* payload key ``= HKDF-SHA256(ikm=data_key, salt=package_id,
  info=enc("TGSP-v2 payload key", suite))``;
* stream associated data ``= package_id`` (16 bytes), on top of the chunk counter and
  final flag the stream construction puts in every nonce;
* ``payload.sha256`` in the header is the SHA-256 of the sealed bytes, so a verifier
  without keys can check the payload before anything is decrypted.
"""

from __future__ import annotations

import hashlib
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
VERIFY_BLOCKS_IN_FLIGHT = 4


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
    full = payload.chunk_size + TAG_SIZE
    for _ in range(payload.chunk_count - 1):
        yield full
    yield payload.length - (payload.chunk_count - 1) * full


def check_payload_digest(
    source: BinaryIO, payload: PayloadInfo, threads: int | None = None
) -> None:
    """Hash the payload at the current position; raise if it differs from the header.

    One SHA-256 over the sealed bytes (the format's signed digest) is sequential; with
    more than one thread, reading the next block overlaps hashing the previous one.
    """
    digest = hashlib.sha256()
    spare: list[bytearray] = []
    pending: deque[tuple[bytearray, Future[None]]] = deque()
    remaining = payload.length
    with Workers(resolve_threads(threads), lanes=1) as workers:
        while remaining:
            if len(pending) >= VERIFY_BLOCKS_IN_FLIGHT:
                buffer, hashed = pending.popleft()
                hashed.result()
                spare.append(buffer)
            buffer = spare.pop() if spare else bytearray(VERIFY_BLOCK_SIZE)
            view = memoryview(buffer)[: min(VERIFY_BLOCK_SIZE, remaining)]
            _read_into(source, view)
            pending.append((buffer, workers.in_lane(0, digest.update, view)))
            remaining -= len(view)
        for _, hashed in pending:
            hashed.result()
    if digest.hexdigest() != payload.sha256:
        raise PayloadDigestError(
            "payload SHA-256 does not match the signed header: the encrypted payload was "
            "altered, reordered or spliced"
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
