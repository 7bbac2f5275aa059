"""The stream AEAD's refusals by their messages, its defaults, its in-place API and its
limits.

Written from the mutation run on tensorguard/crypto/_stream_aead.py (docs/SECURITY.md
§4): ``seal_into``/``open_into`` (what TGSP's worker threads call) had no test in the
crypto layer; the default associated data, the last chunk index, the byte count
``decrypt_stream`` returns and reading from a source that returns short reads (a pipe)
were never checked; and refusals were checked by type only, so a message naming the
wrong chunk, or a corrupted final chunk reported as a truncation, went unnoticed.
"""

from __future__ import annotations

import io
import re
from typing import BinaryIO, cast

import pytest

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
from tensorguard.crypto._errors import CryptoError
from tensorguard.crypto._stream_aead import (
    MAX_CHUNK_SIZE,
    MAX_CHUNKS,
    TAG_SIZE,
    ChunkCipher,
    chunk_count,
)

KEY = bytes(range(32))
AD = b"package-id"
CHUNK = 16
AUTH_FAILED = (
    "failed authentication: wrong key, or the stream was altered, reordered, truncated or spliced"
)


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def sealed_stream(data: bytes, associated_data: bytes = AD) -> bytes:
    sink = io.BytesIO()
    encrypt_stream(io.BytesIO(data), sink, KEY, associated_data, CHUNK)
    return sink.getvalue()


class Trickle(io.RawIOBase):
    """A source that returns at most three bytes per read, as a pipe may."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 3) if size >= 0 else 3)


def trickle(data: bytes) -> BinaryIO:
    return cast(BinaryIO, Trickle(data))


def test_in_place_sealing_and_opening_match_the_copying_api() -> None:
    cipher = ChunkCipher(KEY, AD, CHUNK)
    plaintexts = [bytes(range(CHUNK)), b"tail"]
    for index, plaintext in enumerate(plaintexts):
        final = index == len(plaintexts) - 1
        out = memoryview(bytearray(len(plaintext) + TAG_SIZE))
        assert cipher.seal_into(index, plaintext, out, final=final) == len(out)
        assert bytes(out) == cipher.seal(index, plaintext, final=final)
        opened = memoryview(bytearray(len(plaintext)))
        assert cipher.open_into(index, bytes(out), opened, final=final) == len(plaintext)
        assert bytes(opened) == plaintext == cipher.open(index, bytes(out), final=final)


def test_in_place_opening_refuses_like_opening() -> None:
    cipher = ChunkCipher(KEY, AD, CHUNK)
    inner = cipher.seal(4, bytes(CHUNK), final=False)
    out = memoryview(bytearray(CHUNK))
    with pytest.raises(
        StreamTruncatedError,
        match=exactly("stream truncated: chunk 4 is genuine but not the final chunk"),
    ):
        cipher.open_into(4, inner, out, final=True)
    with pytest.raises(AEADDecryptionError, match=exactly(f"chunk 5 {AUTH_FAILED}")):
        cipher.open_into(5, inner, out, final=False)
    with pytest.raises(
        StreamFormatError, match=exactly("sealed chunk 4 has an impossible length 20")
    ):
        cipher.open_into(4, inner[:20], out, final=False)
    with pytest.raises(
        StreamFormatError, match=exactly("sealed chunk 4 has an impossible length 20")
    ):
        cipher.open(4, inner[:20], final=False)
    with pytest.raises(StreamFormatError, match="non-final chunks must be exactly 16 bytes"):
        cipher.seal_into(0, b"short", memoryview(bytearray(21)), final=False)
    with pytest.raises(StreamFormatError, match=f"chunk index {MAX_CHUNKS} is outside"):
        cipher.seal_into(MAX_CHUNKS, b"x", memoryview(bytearray(17)), final=True)
    with pytest.raises(StreamFormatError, match=f"chunk index {MAX_CHUNKS} is outside"):
        cipher.open_into(MAX_CHUNKS, inner, out, final=False)


def test_the_last_chunk_index_is_usable_and_the_next_is_not() -> None:
    cipher = ChunkCipher(KEY, AD, CHUNK)
    last = cipher.seal(MAX_CHUNKS - 1, b"end", final=True)
    assert cipher.open(MAX_CHUNKS - 1, last, final=True) == b"end"
    with pytest.raises(
        StreamFormatError, match=exactly(f"chunk index {MAX_CHUNKS} is outside 0..{MAX_CHUNKS - 1}")
    ):
        cipher.seal(MAX_CHUNKS, b"end", final=True)
    with pytest.raises(StreamFormatError, match="outside"):
        cipher.seal(-1, b"end", final=True)


def test_a_stream_refuses_a_chunk_beyond_the_chunk_limit() -> None:
    encryptor = StreamEncryptor(KEY, AD, CHUNK)
    encryptor._state.index = MAX_CHUNKS  # as if 2**40 chunks had been sealed
    with pytest.raises(StreamFormatError, match=exactly(f"stream exceeds {MAX_CHUNKS} chunks")):
        encryptor.encrypt_chunk(b"end", final=True)


def test_no_associated_data_is_the_empty_context() -> None:
    """The default context is empty, not some placeholder: a stream sealed without one
    opens with ``b""`` given explicitly, and the other way round."""
    assert ChunkCipher(KEY).seal(0, b"x", final=True) == ChunkCipher(KEY, b"").seal(
        0, b"x", final=True
    )
    assert StreamEncryptor(KEY).encrypt_chunk(b"x", final=True) == StreamEncryptor(
        KEY, b""
    ).encrypt_chunk(b"x", final=True)
    default_sink = io.BytesIO()
    encrypt_stream(io.BytesIO(b"payload"), default_sink, KEY)
    sealed = default_sink.getvalue()
    explicit = io.BytesIO()
    assert decrypt_stream(io.BytesIO(sealed), explicit, KEY, b"") == len(b"payload")
    assert StreamDecryptor(KEY).decrypt_chunk(sealed, final=True) == b"payload"
    assert decrypt_stream(io.BytesIO(sealed), io.BytesIO(), KEY) == len(b"payload")


def test_decrypt_stream_returns_the_bytes_written() -> None:
    data = bytes(range(256)) * 3  # 48 chunks of 16
    sink = io.BytesIO()
    assert decrypt_stream(io.BytesIO(sealed_stream(data)), sink, KEY, AD, CHUNK) == len(data)
    assert sink.getvalue() == data


def test_short_reads_from_the_source_are_joined_without_gaps() -> None:
    data = bytes(range(100))
    trickled = io.BytesIO()
    assert encrypt_stream(trickle(data), trickled, KEY, AD, CHUNK) == len(data)
    assert trickled.getvalue() == sealed_stream(data)
    opened = io.BytesIO()
    assert decrypt_stream(trickle(trickled.getvalue()), opened, KEY, AD, CHUNK) == len(data)
    assert opened.getvalue() == data


def test_a_corrupted_final_chunk_is_a_failure_not_a_truncation() -> None:
    sealed = bytearray(sealed_stream(bytes(2 * CHUNK)))  # two full chunks, the last final
    sealed[-1] ^= 1
    with pytest.raises(AEADDecryptionError) as refused:
        decrypt_stream(io.BytesIO(bytes(sealed)), io.BytesIO(), KEY, AD, CHUNK)
    assert type(refused.value) is AEADDecryptionError
    assert str(refused.value) == f"final chunk 1 {AUTH_FAILED}"


def test_each_refusal_says_what_is_wrong() -> None:
    with pytest.raises(KeyFormatError, match=exactly("stream key must be 32 bytes, got 31")):
        ChunkCipher(bytes(31))
    with pytest.raises(
        CryptoError, match=exactly(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes, got 0")
    ):
        ChunkCipher(KEY, AD, 0)
    with pytest.raises(CryptoError, match=exactly("stream length must be >= 0 and chunk size > 0")):
        chunk_count(-1, CHUNK)
    with pytest.raises(
        StreamFormatError,
        match=exactly(
            "chunk of 5 bytes: non-final chunks must be exactly 16 bytes and the final one at "
            "most that"
        ),
    ):
        StreamEncryptor(KEY, AD, CHUNK).encrypt_chunk(b"short", final=False)
    with pytest.raises(
        StreamFormatError, match=exactly("sealed chunk 0 has an impossible length 7")
    ):
        StreamDecryptor(KEY, AD, CHUNK).decrypt_chunk(bytes(7), final=True)
    with pytest.raises(AEADDecryptionError, match=exactly(f"chunk 0 {AUTH_FAILED}")):
        StreamDecryptor(KEY, AD, CHUNK).decrypt_chunk(bytes(CHUNK + TAG_SIZE), final=False)


def test_stream_state_errors_say_what_is_wrong() -> None:
    encryptor = StreamEncryptor(KEY, AD, CHUNK)
    assert encryptor.chunk_size == CHUNK
    assert encryptor.finished is False
    first = encryptor.encrypt_chunk(bytes(CHUNK), final=False)
    last = encryptor.encrypt_chunk(b"end", final=True)
    assert encryptor.finished is True
    with pytest.raises(
        StreamFormatError, match=exactly("chunk after the final chunk of the stream")
    ):
        encryptor.encrypt_chunk(b"more", final=True)
    decryptor = StreamDecryptor(KEY, AD, CHUNK)
    decryptor.decrypt_chunk(first, final=False)
    with pytest.raises(
        StreamTruncatedError, match=exactly("stream ended after 1 chunks without its final chunk")
    ):
        decryptor.finalize()
    assert decryptor.decrypt_chunk(last, final=True) == b"end"
    assert decryptor.chunks_opened == 2


def test_empty_and_extended_streams_say_what_is_wrong() -> None:
    with pytest.raises(
        StreamTruncatedError,
        match=exactly("encrypted stream is empty; expected at least one chunk"),
    ):
        decrypt_stream(io.BytesIO(b""), io.BytesIO(), KEY, AD, CHUNK)
    exact_final = sealed_stream(bytes(CHUNK))  # a final chunk of exactly CHUNK bytes
    with pytest.raises(
        StreamFormatError, match=exactly("data follows the final chunk of the encrypted stream")
    ):
        decrypt_stream(_after_last_piece(exact_final, b"!"), io.BytesIO(), KEY, AD, CHUNK)


def _after_last_piece(sealed: bytes, extra: bytes) -> BinaryIO:
    """A source that reports its end once after ``sealed`` and then yields ``extra``: the
    decryptor's read-ahead sees the end, and only its final check sees the extra bytes."""

    class Source(io.BufferedIOBase):
        def __init__(self) -> None:
            self._pieces = [sealed, b"", extra]

        def read(self, size: int | None = -1) -> bytes:
            if not self._pieces:
                return b""
            piece = self._pieces[0]
            wanted = len(piece) if size is None or size < 0 else size
            taken, rest = piece[:wanted], piece[wanted:]
            if rest:
                self._pieces[0] = rest
            else:
                self._pieces.pop(0)
            return taken

    return cast(BinaryIO, Source())
