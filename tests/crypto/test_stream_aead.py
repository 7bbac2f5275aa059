"""Chunked AES-256-GCM: round trips, truncation, reordering, splicing, extension."""

from __future__ import annotations

import io
import secrets

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorguard.crypto import (
    AEADDecryptionError,
    KeyFormatError,
    StreamDecryptor,
    StreamEncryptor,
    StreamFormatError,
    StreamTruncatedError,
    decrypt_stream,
    encrypt_stream,
)
from tensorguard.crypto._stream_aead import TAG_SIZE, ciphertext_length

CHUNK = 64
AD = b"package-id"


def seal(data: bytes, key: bytes, ad: bytes = AD, chunk: int = CHUNK) -> bytes:
    sink = io.BytesIO()
    assert encrypt_stream(io.BytesIO(data), sink, key, ad, chunk) == len(data)
    return sink.getvalue()


def unseal(sealed: bytes, key: bytes, ad: bytes = AD, chunk: int = CHUNK) -> bytes:
    sink = io.BytesIO()
    decrypt_stream(io.BytesIO(sealed), sink, key, ad, chunk)
    return sink.getvalue()


def chunks_of(sealed: bytes, chunk: int = CHUNK) -> list[bytes]:
    size = chunk + TAG_SIZE
    return [sealed[i : i + size] for i in range(0, len(sealed), size)]


@pytest.fixture
def key() -> bytes:
    return secrets.token_bytes(32)


@pytest.mark.parametrize("length", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 5])
def test_round_trip(key: bytes, length: int) -> None:
    data = secrets.token_bytes(length)
    sealed = seal(data, key)
    assert len(sealed) == ciphertext_length(length, CHUNK)
    assert unseal(sealed, key) == data


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=600), chunk=st.integers(1, 200))
def test_property_round_trip(data: bytes, chunk: int) -> None:
    key = secrets.token_bytes(32)
    assert unseal(seal(data, key, chunk=chunk), key, chunk=chunk) == data


def test_truncation_at_every_chunk_boundary_is_detected(key: bytes) -> None:
    sealed = seal(secrets.token_bytes(5 * CHUNK + 7), key)
    pieces = chunks_of(sealed)
    for keep in range(1, len(pieces)):
        with pytest.raises(StreamTruncatedError):
            unseal(b"".join(pieces[:keep]), key)
    with pytest.raises(StreamTruncatedError):
        unseal(b"", key)


def test_truncation_inside_a_chunk_is_detected(key: bytes) -> None:
    sealed = seal(secrets.token_bytes(3 * CHUNK), key)
    for cut in (1, CHUNK, CHUNK + TAG_SIZE + 3, len(sealed) - 1):
        with pytest.raises(AEADDecryptionError):
            unseal(sealed[:cut], key)


def test_reordered_chunks_are_rejected(key: bytes) -> None:
    pieces = chunks_of(seal(secrets.token_bytes(4 * CHUNK + 1), key))
    swapped = [pieces[1], pieces[0], *pieces[2:]]
    with pytest.raises(AEADDecryptionError):
        unseal(b"".join(swapped), key)
    with pytest.raises(AEADDecryptionError):
        unseal(b"".join([*pieces[:2], pieces[3], pieces[2], pieces[4]]), key)


def test_chunk_spliced_from_another_stream_is_rejected(key: bytes) -> None:
    ours = chunks_of(seal(secrets.token_bytes(3 * CHUNK), key))
    theirs = chunks_of(seal(secrets.token_bytes(3 * CHUNK), secrets.token_bytes(32)))
    same_key_other_ad = chunks_of(seal(secrets.token_bytes(3 * CHUNK), key, ad=b"other"))
    for foreign in (theirs, same_key_other_ad):
        with pytest.raises(AEADDecryptionError):
            unseal(b"".join([ours[0], foreign[1], ours[2]]), key)


def test_stream_sealed_with_other_chunk_size_is_rejected(key: bytes) -> None:
    sealed = seal(secrets.token_bytes(CHUNK * 2), key, chunk=CHUNK)
    with pytest.raises(AEADDecryptionError):
        unseal(sealed, key, chunk=CHUNK * 2 + TAG_SIZE)


def test_data_after_the_final_chunk_is_rejected(key: bytes) -> None:
    sealed = seal(secrets.token_bytes(CHUNK + 3), key)
    with pytest.raises(AEADDecryptionError):
        unseal(sealed + b"x", key)
    short_final = seal(b"abc", key)
    with pytest.raises(AEADDecryptionError):
        unseal(short_final + short_final, key)
    full_final = seal(bytes(CHUNK), key)
    with pytest.raises(AEADDecryptionError):
        unseal(full_final + full_final, key)


def test_two_final_chunks_are_rejected(key: bytes) -> None:
    decryptor = StreamDecryptor(key, AD, CHUNK)
    encryptor = StreamEncryptor(key, AD, CHUNK)
    decryptor.decrypt_chunk(encryptor.encrypt_chunk(b"end", final=True), final=True)
    with pytest.raises(StreamFormatError):
        decryptor.decrypt_chunk(bytes(20), final=True)


def test_decryptor_requires_the_final_chunk(key: bytes) -> None:
    encryptor = StreamEncryptor(key, AD, CHUNK)
    decryptor = StreamDecryptor(key, AD, CHUNK)
    decryptor.decrypt_chunk(encryptor.encrypt_chunk(bytes(CHUNK), final=False), final=False)
    with pytest.raises(StreamTruncatedError):
        decryptor.finalize()


def test_encryptor_refuses_misuse(key: bytes) -> None:
    encryptor = StreamEncryptor(key, AD, CHUNK)
    with pytest.raises(StreamFormatError):
        encryptor.encrypt_chunk(b"short", final=False)
    with pytest.raises(StreamFormatError):
        encryptor.encrypt_chunk(bytes(CHUNK + 1), final=True)
    encryptor.encrypt_chunk(b"last", final=True)
    assert encryptor.finished
    with pytest.raises(StreamFormatError):
        encryptor.encrypt_chunk(b"more", final=True)


def test_wrong_key_length_is_refused() -> None:
    with pytest.raises(KeyFormatError):
        StreamEncryptor(bytes(16))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_property_any_single_byte_flip_is_rejected(data: st.DataObject) -> None:
    key = secrets.token_bytes(32)
    sealed = bytearray(seal(bytes(3 * CHUNK + 10), key))
    position = data.draw(st.integers(0, len(sealed) - 1))
    sealed[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(AEADDecryptionError):
        unseal(bytes(sealed), key)
