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
from collections.abc import Iterator
from typing import BinaryIO

from tensorguard.crypto.errors import AEADDecryptionError
from tensorguard.crypto.kdf import encode_info, hkdf_sha256
from tensorguard.crypto.stream_aead import TAG_SIZE, StreamDecryptor, StreamEncryptor
from tensorguard.tgsp.errors import (
    BuildError,
    ChunkAuthenticationError,
    PackageTruncatedError,
    PayloadDigestError,
)
from tensorguard.tgsp.format import PAYLOAD_KEY_LABEL, SUITE
from tensorguard.tgsp.header import PayloadInfo

READ_SIZE = 1024 * 1024


def derive_payload_key(data_key: bytes, package_id: bytes) -> bytes:
    """Derive the single-use payload stream key from the package's data key."""
    return hkdf_sha256(
        data_key, salt=package_id, info=encode_info(PAYLOAD_KEY_LABEL, SUITE.encode("ascii"))
    )


class PayloadWriter:
    """Seal a known number of plaintext bytes into chunks, hashing the sealed output."""

    def __init__(
        self, sink: BinaryIO, key: bytes, package_id: bytes, chunk_size: int, plaintext_length: int
    ) -> None:
        """Prepare to seal exactly ``plaintext_length`` bytes into ``sink``."""
        self._sink = sink
        self._encryptor = StreamEncryptor(key, package_id, chunk_size)
        self._buffer = bytearray(chunk_size)
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._remaining = plaintext_length
        self._digest = hashlib.sha256()

    def write(self, data: bytes | memoryview) -> None:
        """Accept the next plaintext bytes; seal every chunk known not to be the last."""
        size = len(data)
        if size > self._remaining:
            raise BuildError("more input than the manifest declared; a file grew during packaging")
        self._remaining -= size
        chunk_size = len(self._buffer)
        offset = 0
        while offset < size:
            if self._filled == chunk_size:
                self._seal(final=False)
            take = min(chunk_size - self._filled, size - offset)
            self._view[self._filled : self._filled + take] = data[offset : offset + take]
            self._filled += take
            offset += take
        if self._filled == chunk_size and self._remaining > 0:
            self._seal(final=False)

    def finish(self) -> str:
        """Seal the final chunk and return the hex SHA-256 of the sealed payload."""
        if self._remaining:
            raise BuildError(f"{self._remaining} declared bytes never arrived; a file shrank")
        self._seal(final=True)
        return self._digest.hexdigest()

    def _seal(self, *, final: bool) -> None:
        sealed = self._encryptor.encrypt_chunk(self._view[: self._filled], final=final)
        self._digest.update(sealed)
        self._sink.write(sealed)
        self._filled = 0


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    data = source.read(size)
    if len(data) != size:
        raise PackageTruncatedError("package ended inside its payload")
    return data


def _sealed_chunk_sizes(payload: PayloadInfo) -> Iterator[int]:
    full = payload.chunk_size + TAG_SIZE
    for _ in range(payload.chunk_count - 1):
        yield full
    yield payload.length - (payload.chunk_count - 1) * full


def check_payload_digest(source: BinaryIO, payload: PayloadInfo) -> None:
    """Hash the payload at the current position; raise if it differs from the header."""
    digest = hashlib.sha256()
    remaining = payload.length
    while remaining:
        block = _read_exactly(source, min(READ_SIZE, remaining))
        digest.update(block)
        remaining -= len(block)
    if digest.hexdigest() != payload.sha256:
        raise PayloadDigestError(
            "payload SHA-256 does not match the signed header: the encrypted payload was "
            "altered, reordered or spliced"
        )


def decrypt_payload(
    source: BinaryIO, payload: PayloadInfo, key: bytes, package_id: bytes
) -> Iterator[bytes]:
    """Yield plaintext chunk by chunk; each chunk is authenticated before it is yielded.

    The stream's final-chunk check runs after the last chunk, so callers must treat
    output as provisional until the generator finishes without raising. The payload
    digest is not recomputed here: a change to the file after verification either
    fails AES-GCM (without the data key) or changes the plaintext, which the signed
    per-file digests catch.
    """
    decryptor = StreamDecryptor(key, package_id, payload.chunk_size)
    last_index = payload.chunk_count - 1
    for index, sealed_size in enumerate(_sealed_chunk_sizes(payload)):
        sealed = _read_exactly(source, sealed_size)
        try:
            yield decryptor.decrypt_chunk(sealed, final=index == last_index)
        except AEADDecryptionError as exc:
            raise ChunkAuthenticationError(f"payload chunk {index}: {exc}") from exc
    decryptor.finalize()
