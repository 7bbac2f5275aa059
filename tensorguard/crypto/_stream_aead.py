"""Chunked AES-256-GCM for streams of any length (the STREAM construction).

A stream is cut into chunks of ``chunk_size`` plaintext bytes; only the last chunk
may be shorter (or empty). Chunk ``i`` is sealed with AES-256-GCM under

* nonce ``= u88_be(i) || final`` where ``final`` is ``0x01`` for the last chunk and
  ``0x00`` otherwise (Hoang, Reyhanitabar, Rogaway and Vizár, "Online
  Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", 2015);
* associated data ``= "TG-STREAM-AES256GCM-v1" || u32_be(chunk_size) || ad``, where
  ``ad`` binds the stream to its context (for TGSP: the package id).

Reordering changes a chunk's counter, dropping the tail leaves a chunk whose final
flag is 0 where 1 is expected, appending data after a final chunk is refused, and a
chunk from another stream fails under a different key or associated data. Nonces are
deterministic, so **a key must encrypt exactly one stream**; derive it per stream
(e.g. :func:`tensorguard.crypto._kdf.hkdf_sha256` over a fresh random key).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tensorguard.crypto._errors import (
    AEADDecryptionError,
    CryptoError,
    KeyFormatError,
    StreamFormatError,
    StreamTruncatedError,
)

KEY_SIZE = 32
TAG_SIZE = 16
DEFAULT_CHUNK_SIZE = 1024 * 1024
MAX_CHUNK_SIZE = 64 * 1024 * 1024
MAX_CHUNKS = 2**40
_AD_PREFIX = b"TG-STREAM-AES256GCM-v1"


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def ciphertext_length(plaintext_length: int, chunk_size: int) -> int:
    """Return the sealed length of a stream of ``plaintext_length`` bytes."""
    return plaintext_length + chunk_count(plaintext_length, chunk_size) * TAG_SIZE


def chunk_count(plaintext_length: int, chunk_size: int) -> int:
    """Return how many chunks a stream of ``plaintext_length`` bytes uses (at least 1)."""
    if plaintext_length < 0 or chunk_size <= 0:
        raise CryptoError("stream length must be >= 0 and chunk size > 0")
    return max(1, -(-plaintext_length // chunk_size))


class ChunkCipher:
    """Seal or open any chunk of one stream by its index.

    Holds no position, so chunks may be sealed or opened in any order and from several
    threads at once (AES-GCM in ``cryptography`` releases the GIL); the caller owns the
    stream's order: chunk ``i`` of ``n`` is final exactly when ``i == n - 1``.
    :class:`StreamEncryptor` and :class:`StreamDecryptor` are the sequential front ends.
    """

    def __init__(
        self, key: bytes, associated_data: bytes = b"", chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        """Prepare the cipher for a stream sealed under the 32-byte single-use ``key``."""
        if len(key) != KEY_SIZE:
            raise KeyFormatError(f"stream key must be {KEY_SIZE} bytes, got {len(key)}")
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise CryptoError(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes, got {chunk_size}")
        self._aead = AESGCM(key)
        self._associated_data = _AD_PREFIX + struct.pack(">I", chunk_size) + associated_data
        self.chunk_size = chunk_size

    @staticmethod
    def _check_index(index: int) -> None:
        if not 0 <= index < MAX_CHUNKS:
            raise StreamFormatError(f"chunk index {index} is outside 0..{MAX_CHUNKS - 1}")

    def check_plaintext_size(self, size: int, *, final: bool) -> None:
        """Raise :class:`StreamFormatError` unless a chunk may hold ``size`` bytes."""
        if (not final and size != self.chunk_size) or size > self.chunk_size:
            raise StreamFormatError(
                f"chunk of {size} bytes: non-final chunks must be exactly "
                f"{self.chunk_size} bytes and the final one at most that"
            )

    def check_sealed_size(self, index: int, size: int, *, final: bool) -> None:
        """Raise :class:`StreamFormatError` unless chunk ``index`` may be ``size`` bytes sealed."""
        plain = size - TAG_SIZE
        if plain < 0 or plain > self.chunk_size or (not final and plain != self.chunk_size):
            raise StreamFormatError(f"sealed chunk {index} has an impossible length {size}")

    def seal(self, index: int, plaintext: bytes | bytearray | memoryview, *, final: bool) -> bytes:
        """Return ``ciphertext || tag`` of chunk ``index``."""
        self.check_plaintext_size(len(plaintext), final=final)
        self._check_index(index)
        return self._aead.encrypt(_nonce(index, final), plaintext, self._associated_data)

    def seal_into(
        self, index: int, plaintext: bytes | bytearray | memoryview, out: memoryview, *, final: bool
    ) -> int:
        """Write ``ciphertext || tag`` of chunk ``index`` into ``out`` (exactly that long)."""
        self.check_plaintext_size(len(plaintext), final=final)
        self._check_index(index)
        return self._aead.encrypt_into(_nonce(index, final), plaintext, self._associated_data, out)

    def open_into(
        self, index: int, sealed: bytes | bytearray | memoryview, out: memoryview, *, final: bool
    ) -> int:
        """Write the plaintext of chunk ``index`` into ``out`` (``len(sealed) - 16`` bytes).

        Raises like :meth:`open`; after a refusal ``out`` holds unauthenticated bytes
        that the caller must discard.
        """
        self.check_sealed_size(index, len(sealed), final=final)
        self._check_index(index)
        try:
            return self._aead.decrypt_into(_nonce(index, final), sealed, self._associated_data, out)
        except InvalidTag as exc:
            raise self._refusal(index, sealed, final=final) from exc

    def open(self, index: int, sealed: bytes | bytearray | memoryview, *, final: bool) -> bytes:
        """Return the plaintext of chunk ``index`` or raise :class:`AEADDecryptionError`.

        A chunk that fails as the final chunk but opens as an inner one raises
        :class:`StreamTruncatedError` (the stream was cut after it).
        """
        self.check_sealed_size(index, len(sealed), final=final)
        self._check_index(index)
        try:
            return self._aead.decrypt(_nonce(index, final), sealed, self._associated_data)
        except InvalidTag as exc:
            raise self._refusal(index, sealed, final=final) from exc

    def _refusal(
        self, index: int, sealed: bytes | bytearray | memoryview, *, final: bool
    ) -> AEADDecryptionError:
        if (
            final
            and len(sealed) - TAG_SIZE == self.chunk_size
            and self._opens_as_inner(index, sealed)
        ):
            return StreamTruncatedError(
                f"stream truncated: chunk {index} is genuine but not the final chunk"
            )
        kind = "final " if final else ""
        return AEADDecryptionError(
            f"{kind}chunk {index} failed authentication: wrong key, or the stream was "
            "altered, reordered, truncated or spliced"
        )

    def _opens_as_inner(self, index: int, sealed: bytes | bytearray | memoryview) -> bool:
        try:
            self._aead.decrypt(_nonce(index, final=False), sealed, self._associated_data)
        except InvalidTag:
            return False
        return True


class _StreamState:
    def __init__(self, key: bytes, associated_data: bytes, chunk_size: int) -> None:
        self.cipher = ChunkCipher(key, associated_data, chunk_size)
        self.chunk_size = chunk_size
        self.index = 0
        self.finished = False

    def next_index(self, final: bool) -> int:
        if self.finished:
            raise StreamFormatError("chunk after the final chunk of the stream")
        if self.index >= MAX_CHUNKS:
            raise StreamFormatError(f"stream exceeds {MAX_CHUNKS} chunks")
        index = self.index
        self.index += 1
        self.finished = final
        return index


class StreamEncryptor:
    """Seal a stream chunk by chunk; call :meth:`encrypt_chunk` with ``final=True`` last."""

    def __init__(
        self, key: bytes, associated_data: bytes = b"", chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        """Start a stream under a 32-byte single-use ``key``."""
        self._state = _StreamState(key, associated_data, chunk_size)

    @property
    def chunk_size(self) -> int:
        """Plaintext bytes per (non-final) chunk."""
        return self._state.chunk_size

    def encrypt_chunk(self, plaintext: bytes | bytearray | memoryview, *, final: bool) -> bytes:
        """Return ``ciphertext || tag`` for the next chunk."""
        self._state.cipher.check_plaintext_size(len(plaintext), final=final)
        return self._state.cipher.seal(self._state.next_index(final), plaintext, final=final)

    @property
    def finished(self) -> bool:
        """Whether the final chunk has been sealed."""
        return self._state.finished


class StreamDecryptor:
    """Open a stream chunk by chunk, in order; :meth:`finalize` proves it was complete."""

    def __init__(
        self, key: bytes, associated_data: bytes = b"", chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> None:
        """Start reading a stream sealed under ``key`` with the same parameters."""
        self._state = _StreamState(key, associated_data, chunk_size)

    def decrypt_chunk(self, sealed: bytes, *, final: bool) -> bytes:
        """Return the plaintext of the next chunk or raise :class:`AEADDecryptionError`."""
        self._state.cipher.check_sealed_size(self._state.index, len(sealed), final=final)
        return self._state.cipher.open(self._state.next_index(final), sealed, final=final)

    @property
    def chunks_opened(self) -> int:
        """How many chunks have been opened so far."""
        return self._state.index

    def finalize(self) -> None:
        """Raise :class:`StreamTruncatedError` unless the final chunk was opened."""
        if not self._state.finished:
            raise StreamTruncatedError(
                f"stream ended after {self._state.index} chunks without its final chunk"
            )


def _read_exactly(source: BinaryIO, size: int) -> bytes:
    parts = []
    remaining = size
    while remaining:
        part = source.read(remaining)
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _pieces_marking_last(source: BinaryIO, size: int) -> Iterator[tuple[bytes, bool]]:
    """Yield ``(piece, is_last)`` over ``source`` in ``size``-byte pieces, reading ahead.

    Always yields at least one piece (empty for an empty source); only the last piece
    may be shorter than ``size``.
    """
    current = _read_exactly(source, size)
    while True:
        following = _read_exactly(source, size) if len(current) == size else b""
        last = not following
        yield current, last
        if last:
            return
        current = following


def encrypt_stream(
    source: BinaryIO,
    sink: BinaryIO,
    key: bytes,
    associated_data: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Seal everything ``source`` yields into ``sink``; return plaintext bytes read.

    Reads one chunk ahead to know which chunk is final; memory use is two chunks.
    """
    encryptor = StreamEncryptor(key, associated_data, chunk_size)
    total = 0
    for plaintext, final in _pieces_marking_last(source, chunk_size):
        sink.write(encryptor.encrypt_chunk(plaintext, final=final))
        total += len(plaintext)
    return total


def decrypt_stream(
    source: BinaryIO,
    sink: BinaryIO,
    key: bytes,
    associated_data: bytes = b"",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> int:
    """Open a stream sealed by :func:`encrypt_stream` into ``sink``; return bytes written.

    Plaintext of a chunk reaches ``sink`` only after that chunk authenticated; a stream
    cut short or extended raises after the last good chunk, so callers writing to a
    file must discard it on error.
    """
    decryptor = StreamDecryptor(key, associated_data, chunk_size)
    total = 0
    for sealed, final in _pieces_marking_last(source, chunk_size + TAG_SIZE):
        if not sealed:
            raise StreamTruncatedError("encrypted stream is empty; expected at least one chunk")
        plaintext = decryptor.decrypt_chunk(sealed, final=final)
        sink.write(plaintext)
        total += len(plaintext)
    decryptor.finalize()
    if source.read(1):
        raise StreamFormatError("data follows the final chunk of the encrypted stream")
    return total
