"""The stream AEAD against its specification, computed independently with AESGCM.

Written from the mutation run on tensorguard/crypto/_stream_aead.py (docs/SECURITY.md
§4): round trips alone let a 13-byte nonce, a counter starting at 1 or stepping by 2,
and a signed chunk-size field survive, because both sides changed together. Here every
sealed chunk must equal AES-256-GCM with the documented nonce and associated data.
"""

from __future__ import annotations

import struct

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tensorguard.crypto._errors import CryptoError, StreamFormatError
from tensorguard.crypto._stream_aead import (
    MAX_CHUNK_SIZE,
    StreamDecryptor,
    StreamEncryptor,
    chunk_count,
)

KEY = bytes(range(32))
CONTEXT = b"package-id-0123"
CHUNK = 16


def expected_chunk(index: int, final: bool, plaintext: bytes, chunk_size: int = CHUNK) -> bytes:
    """nonce = u88_be(index) || final; AD = label || u32_be(chunk_size) || context."""
    nonce = index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")
    associated = b"TG-STREAM-AES256GCM-v1" + struct.pack(">I", chunk_size) + CONTEXT
    return AESGCM(KEY).encrypt(nonce, plaintext, associated)


def test_every_sealed_chunk_matches_the_specification() -> None:
    plaintexts = [b"A" * CHUNK, b"B" * CHUNK, b"C" * CHUNK, b"tail!"]
    encryptor = StreamEncryptor(KEY, CONTEXT, CHUNK)
    for index, plaintext in enumerate(plaintexts):
        final = index == len(plaintexts) - 1
        assert encryptor.encrypt_chunk(plaintext, final=final) == expected_chunk(
            index, final, plaintext
        ), index


def test_the_decryptor_opens_chunks_sealed_by_the_specification() -> None:
    decryptor = StreamDecryptor(KEY, CONTEXT, CHUNK)
    assert decryptor.decrypt_chunk(expected_chunk(0, False, b"x" * CHUNK), final=False) == (
        b"x" * CHUNK
    )
    assert decryptor.decrypt_chunk(expected_chunk(1, True, b"end"), final=True) == b"end"
    decryptor.finalize()


def test_the_largest_chunk_size_is_bound_into_the_associated_data() -> None:
    sealed = StreamEncryptor(KEY, CONTEXT, MAX_CHUNK_SIZE).encrypt_chunk(b"z", final=True)
    assert sealed == expected_chunk(0, True, b"z", MAX_CHUNK_SIZE)
    with pytest.raises(CryptoError):
        StreamEncryptor(KEY, CONTEXT, MAX_CHUNK_SIZE + 1)
    with pytest.raises(CryptoError):
        StreamEncryptor(KEY, CONTEXT, 0)


def test_chunk_count_edges() -> None:
    assert chunk_count(0, 1) == 1
    assert chunk_count(1, 1) == 1
    assert chunk_count(2, 1) == 2
    for length, size in ((-1, 4), (4, 0)):
        with pytest.raises(CryptoError):
            chunk_count(length, size)


def test_a_chunk_longer_than_the_chunk_size_is_refused_even_as_final() -> None:
    with pytest.raises(StreamFormatError):
        StreamEncryptor(KEY, CONTEXT, CHUNK).encrypt_chunk(b"y" * (CHUNK + 1), final=True)
    with pytest.raises(StreamFormatError):
        StreamDecryptor(KEY, CONTEXT, CHUNK).decrypt_chunk(bytes(CHUNK + 17), final=True)
