"""SEAL's and TenSEAL's byte formats of one CKKS ciphertext, read and written in Python.

A TGCV chunk (see :mod:`tensorguard.federation._packing`) is TenSEAL's
``CKKSVectorProto``: ``sizes`` (field 1, packed varints), ``ciphertexts`` (field 2, one
SEAL-serialised ciphertext) and ``scale`` (field 3, a double). A SEAL serialisation is a
16-byte ``SEALHeader`` (magic ``0xA15E``, header size, SEAL version, compression mode,
reserved, total size) followed by the ciphertext's members, compressed or not:
``parms_id`` (4 × u64), NTT flag (u8), size, N, prime count (u64 each), scale (f64),
correction factor (u64), then the coefficients as a ``DynArray`` with its own
uncompressed header and a u64 count. Everything is little-endian.

Why read it here rather than through TenSEAL: the aggregator only adds ciphertexts, and
turning every chunk into a TenSEAL object (parse the proto, decompress, copy into SEAL,
add, compress again) costs more than the addition itself. :func:`read_chunk` checks a
chunk's framing and fields as SEAL would on load, plus the federation's own, and copies
its coefficients into the caller's array (see
:mod:`tensorguard.federation._ciphertext_sum`, which checks the coefficients).

Compression: TenSEAL writes ciphertexts with zstd, but uniformly random residues of a
60-bit prime do not compress, so zstd stores them as *raw* blocks, which are read here
without a zstd library. :func:`read_chunk` returns ``None`` for any encoding it does not
implement (a compressed or checksummed zstd frame, zlib, another SEAL version, a seeded
ciphertext, a non-canonical proto); the caller then loads that chunk through TenSEAL,
which checks it as before. Bytes that are malformed whatever the encoding raise
:class:`CiphertextError`. :func:`write_chunk` writes uncompressed (``compr_mode`` none),
which every SEAL build loads.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import tenseal.sealapi as sealapi

from tensorguard.federation._errors import CiphertextError

UInt64Array = npt.NDArray[np.uint64]

SEAL_MAGIC: Final = 0xA15E
SEAL_HEADER: Final = struct.Struct("<HBBBBHQ")
COMPR_NONE: Final = 0
COMPR_ZSTD: Final = 2
PARMS_ID: Final = struct.Struct("<4Q")
CIPHERTEXT_FIELDS: Final = struct.Struct("<BQQQdQ")
"""NTT flag, size, N, prime count, scale, correction factor."""
U64_LE: Final = struct.Struct("<Q")
CIPHERTEXT_SIZE: Final = 2
"""Polynomials in a fresh (or summed) ciphertext: ``(c0, c1)``."""

_ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
_ZSTD_RAW: Final = 0
_ZSTD_RLE: Final = 1
_PROTO_SIZES: Final = 0x0A
_PROTO_CIPHERTEXTS: Final = 0x12
_PROTO_SCALE: Final = 0x19
_DOUBLE_LE: Final = struct.Struct("<d")


@dataclass(frozen=True)
class CiphertextShape:
    """What every chunk of a round must be: one size-2 NTT-form ciphertext at the data
    level ``parms_id`` with ``primes`` RNS moduli of degree ``degree``, at ``scale``."""

    parms_id: tuple[int, int, int, int]
    primes: tuple[int, ...]
    degree: int
    scale: float

    @property
    def coefficient_shape(self) -> tuple[int, int, int]:
        """``(2, primes, N)``: SEAL's coefficient order (polynomial, prime, coefficient)."""
        return (CIPHERTEXT_SIZE, len(self.primes), self.degree)


class _Unsupported(Exception):
    """An encoding this module does not read; the caller falls back to TenSEAL."""


def protobuf_varint(value: int) -> bytes:
    """``value`` as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def ckks_vector_proto(size: int, ciphertext: bytes, scale: float) -> bytes:
    """TenSEAL's ``CKKSVectorProto`` holding one SEAL-serialised ciphertext."""
    return b"".join(ckks_vector_proto_parts(size, len(ciphertext), scale, ciphertext))


def ckks_vector_proto_parts(
    size: int, ciphertext_bytes: int, scale: float, *ciphertext: bytes | memoryview
) -> list[bytes | memoryview]:
    """The proto as parts to join: head, the ``ciphertext`` parts (``ciphertext_bytes``
    long in all), tail; so the ciphertext is copied once, into the joined result."""
    sizes = protobuf_varint(size)
    head = b"".join(
        [
            bytes([_PROTO_SIZES]),
            protobuf_varint(len(sizes)),
            sizes,
            bytes([_PROTO_CIPHERTEXTS]),
            protobuf_varint(ciphertext_bytes),
        ]
    )
    return [head, *ciphertext, bytes([_PROTO_SCALE]) + _DOUBLE_LE.pack(scale)]


def seal_header(size: int) -> bytes:
    """An uncompressed ``SEALHeader`` of this SEAL build for an object of ``size`` bytes."""
    major, minor = _seal_version()
    return SEAL_HEADER.pack(SEAL_MAGIC, SEAL_HEADER.size, major, minor, COMPR_NONE, 0, size)


def ciphertext_head(shape: CiphertextShape, scale: float) -> bytes:
    """Everything of an uncompressed size-2 ciphertext before its coefficients."""
    coefficient_bytes = 8 * CIPHERTEXT_SIZE * len(shape.primes) * shape.degree
    count = U64_LE.pack(coefficient_bytes // 8)
    dyn_array_head = seal_header(SEAL_HEADER.size + len(count) + coefficient_bytes) + count
    members_head = (
        PARMS_ID.pack(*shape.parms_id)
        + CIPHERTEXT_FIELDS.pack(1, CIPHERTEXT_SIZE, shape.degree, len(shape.primes), scale, 1)
        + dyn_array_head
    )
    return seal_header(SEAL_HEADER.size + len(members_head) + coefficient_bytes) + members_head


def write_chunk_parts(
    coefficients: UInt64Array, size: int, shape: CiphertextShape
) -> list[bytes | memoryview]:
    """The ``CKKSVectorProto`` of the ciphertext ``coefficients`` (shape
    :attr:`CiphertextShape.coefficient_shape`, reduced), as parts to join."""
    if coefficients.shape != shape.coefficient_shape or coefficients.dtype != np.dtype("<u8"):
        raise CiphertextError(f"coefficients must be <u8 of shape {shape.coefficient_shape}")
    head = ciphertext_head(shape, shape.scale)
    body = np.ascontiguousarray(coefficients).data.cast("B")
    return ckks_vector_proto_parts(size, len(head) + len(body), shape.scale, head, body)


def read_chunk(data: memoryview, shape: CiphertextShape, what: str, out: memoryview) -> int | None:
    """Parse one TGCV chunk, copy its coefficients into ``out`` and return its size
    (the proto's value or slot count); ``None`` if its encoding is not one read here.

    ``out`` is ``8 * 2 * primes * N`` bytes (a C-ordered ``coefficient_shape`` array).
    Raises :class:`CiphertextError` (naming ``what``) for bytes that are malformed or
    not a ciphertext of ``shape``: truncated or trailing bytes, another level, degree,
    prime count, scale or size, or not NTT form. The coefficients themselves (below
    their primes, ``c1`` not zero) are the caller's to check, on many chunks at once.
    """
    try:
        size, proto_scale, ciphertext = _read_proto(data)
        _read_ciphertext(ciphertext, shape, what, out)
    except _Unsupported:
        return None
    except (struct.error, IndexError, ValueError) as exc:
        raise CiphertextError(f"{what} is malformed ({exc})") from exc
    if proto_scale != shape.scale:
        raise CiphertextError(f"{what} is not at the federation's scale")
    return size


def _varint(data: memoryview, offset: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 64, 7):
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
    raise ValueError("a protobuf varint is longer than 10 bytes")


def _read_proto(data: memoryview) -> tuple[int, float, memoryview]:
    """The canonical proto TenSEAL writes: one size, one ciphertext, the scale."""
    if len(data) < 2 or data[0] != _PROTO_SIZES:
        raise _Unsupported
    sizes_length, offset = _varint(data, 1)
    sizes_end = offset + sizes_length
    size, offset = _varint(data, offset)
    if offset != sizes_end or data[offset] != _PROTO_CIPHERTEXTS:
        raise _Unsupported
    ciphertext_length, offset = _varint(data, offset + 1)
    ciphertext = data[offset : offset + ciphertext_length]
    offset += ciphertext_length
    if len(ciphertext) != ciphertext_length or offset + 9 != len(data):
        raise _Unsupported
    if data[offset] != _PROTO_SCALE:
        raise _Unsupported
    (scale,) = _DOUBLE_LE.unpack_from(data, offset + 1)
    return size, scale, ciphertext


def _read_header(data: bytes | memoryview, what: str) -> tuple[int, int]:
    """``(compression mode, total size)`` of a ``SEALHeader`` of this SEAL version."""
    if len(data) < SEAL_HEADER.size:
        raise CiphertextError(f"{what} is truncated in its SEAL header")
    magic, header_size, major, minor, compr_mode, reserved, size = SEAL_HEADER.unpack_from(data)
    if magic != SEAL_MAGIC or header_size != SEAL_HEADER.size or reserved != 0:
        raise CiphertextError(f"{what} has no valid SEAL header")
    if (major, minor) != _seal_version():
        raise _Unsupported
    return compr_mode, size


@functools.cache
def _seal_version() -> tuple[int, int]:
    default = sealapi.Serialization.SEALHeader()
    return int(default.version_major), int(default.version_minor)


def _read_ciphertext(data: memoryview, shape: CiphertextShape, what: str, out: memoryview) -> None:
    compr_mode, total = _read_header(data, what)
    if total != len(data):
        raise CiphertextError(f"{what}: SEAL header says {total} bytes, {len(data)} present")
    body = data[SEAL_HEADER.size :]
    if compr_mode == COMPR_ZSTD:
        limit = _MEMBERS_HEAD + _ARRAY_HEAD + 8 * math.prod(shape.coefficient_shape)
        members = _zstd_raw_content(body, what, limit)
    elif compr_mode == COMPR_NONE:
        members = [body]
    else:
        raise _Unsupported
    _read_members(members, shape, what, out)


_MEMBERS_HEAD: Final = PARMS_ID.size + CIPHERTEXT_FIELDS.size
_ARRAY_HEAD: Final = SEAL_HEADER.size + U64_LE.size


def _read_members(
    pieces: list[memoryview], shape: CiphertextShape, what: str, out: memoryview
) -> None:
    """Check the ciphertext's fields (``pieces`` are its members, in order) and copy
    its coefficients into ``out``."""
    head = _head(pieces, _MEMBERS_HEAD + _ARRAY_HEAD)
    if len(head) < _MEMBERS_HEAD:
        raise CiphertextError(f"{what} is truncated in its ciphertext fields")
    parms_id = PARMS_ID.unpack_from(head)
    ntt, size, degree, primes, scale, correction = CIPHERTEXT_FIELDS.unpack_from(
        head, PARMS_ID.size
    )
    if (
        parms_id != shape.parms_id
        or ntt != 1
        or size != CIPHERTEXT_SIZE
        or degree != shape.degree
        or primes != len(shape.primes)
        or scale != shape.scale
        or correction != 1
    ):
        raise CiphertextError(
            f"{what} is not a size-2 NTT-form ciphertext at the federation's data level and scale"
        )
    compr_mode, total = _read_header(head[_MEMBERS_HEAD:], what)
    if compr_mode != COMPR_NONE or len(head) < _MEMBERS_HEAD + _ARRAY_HEAD:
        raise _Unsupported
    (found,) = U64_LE.unpack_from(head, _MEMBERS_HEAD + SEAL_HEADER.size)
    count = CIPHERTEXT_SIZE * primes * degree
    if found != count:
        raise _Unsupported  # e.g. a seeded ciphertext (c1 replaced by its seed)
    expected = _ARRAY_HEAD + 8 * count
    present = sum(len(piece) for piece in pieces) - _MEMBERS_HEAD
    if total != expected or present != expected or len(out) != 8 * count:
        raise CiphertextError(f"{what}: its coefficient array is {present} bytes, not {expected}")
    _copy(pieces, _MEMBERS_HEAD + _ARRAY_HEAD, out)


def _head(pieces: list[memoryview], size: int) -> bytes:
    """The first ``size`` bytes of the concatenated ``pieces`` (fewer if they are shorter)."""
    if len(pieces[0]) >= size:
        return bytes(pieces[0][:size])
    return b"".join(pieces)[:size]


def _copy(pieces: list[memoryview], start: int, out: memoryview) -> None:
    """Copy the concatenated ``pieces`` from ``start`` to their end into ``out``."""
    written = 0
    for piece in pieces:
        if start >= len(piece):
            start -= len(piece)
            continue
        part = piece[start:]
        out[written : written + len(part)] = part
        written += len(part)
        start = 0


def _zstd_raw_content(frame: memoryview, what: str, limit: int) -> list[memoryview]:
    """The content of a zstd frame made of raw and RLE blocks (RFC 8878), as pieces;
    :class:`_Unsupported` for anything else (compressed blocks, a dictionary, a
    checksum). Content beyond ``limit`` bytes (what a ciphertext of the round's shape
    holds) is refused before it is expanded, so RLE blocks cannot inflate memory."""
    if bytes(frame[:4]) != _ZSTD_MAGIC:
        raise CiphertextError(f"{what} is not a zstd frame")
    descriptor = frame[4]
    content_size_flag = descriptor >> 6
    single_segment = bool(descriptor & 0x20)
    if descriptor & 0x08 or descriptor & 0x04 or descriptor & 0x03:
        raise _Unsupported  # reserved bit, content checksum or dictionary
    offset = 5 if single_segment else 6
    field = {0: 1 if single_segment else 0, 1: 2, 2: 4, 3: 8}[content_size_flag]
    content_size: int | None = None
    if field:
        content_size = int.from_bytes(frame[offset : offset + field], "little")
        content_size += 256 if field == 2 else 0
        offset += field
    pieces: list[memoryview] = []
    produced = 0
    while True:
        if offset + 3 > len(frame):
            raise CiphertextError(f"{what} is truncated in a zstd block header")
        block = int.from_bytes(frame[offset : offset + 3], "little")
        offset += 3
        last, kind, length = block & 1, (block >> 1) & 3, block >> 3
        if kind not in (_ZSTD_RAW, _ZSTD_RLE):
            raise _Unsupported
        stored = length if kind == _ZSTD_RAW else 1
        if offset + stored > len(frame):
            raise CiphertextError(f"{what} is truncated in a zstd block")
        produced += length
        if produced > limit:
            raise CiphertextError(f"{what} holds more than a ciphertext of the round's shape")
        if kind == _ZSTD_RAW:
            pieces.append(frame[offset : offset + length])
        else:
            pieces.append(memoryview(bytes(frame[offset : offset + 1]) * length))
        offset += stored
        if last:
            break
    if offset != len(frame):
        raise CiphertextError(f"{what} has bytes after its zstd frame")
    if content_size is not None and content_size != produced:
        raise CiphertextError(f"{what}: zstd frame content is not the size it declares")
    return pieces


@contextlib.contextmanager
def ciphertext_saver(fallback_parent: Path | None = None) -> Iterator[Callable[[Any], bytes]]:
    """Within the block, a function that serialises a ``sealapi.Ciphertext`` to bytes.

    ``sealapi`` saves a ciphertext only to a file path (``Ciphertext.save(path)``; no
    stream or bytes variant is bound, and ``Ciphertext.data(i)`` returns a single
    coefficient). On Linux that path is an anonymous in-memory file
    (``os.memfd_create``, reached as ``/proc/self/fd/N``; SEAL's ``ofstream``
    truncates it on every save): it has no name in any directory, never reaches a disk,
    and is gone when closed, even if the process dies. Elsewhere it is a file in a
    private temporary directory inside ``fallback_parent`` (default: ``/dev/shm`` where
    that is writable, so in RAM, else the system's temporary directory).
    """
    memfd = getattr(os, "memfd_create", None)
    if memfd is not None and os.path.isdir("/proc/self/fd"):
        descriptor = memfd("tg-ckks", os.MFD_CLOEXEC)
        path = f"/proc/self/fd/{descriptor}"

        def save(ciphertext: Any) -> bytes:
            ciphertext.save(path)
            size = os.fstat(descriptor).st_size
            data = os.pread(descriptor, size, 0)
            if len(data) != size:
                raise CiphertextError("SEAL's ciphertext could not be read back in full")
            return data

        try:
            yield save
        finally:
            os.close(descriptor)
        return
    if fallback_parent is None:
        shm = Path("/dev/shm")  # noqa: S108 (a private directory is created inside it)
        fallback_parent = shm if shm.is_dir() and os.access(shm, os.W_OK | os.X_OK) else None
    with tempfile.TemporaryDirectory(prefix="tg-ckks-", dir=fallback_parent) as scratch:
        file = Path(scratch) / "chunk.seal"

        def save_to_file(ciphertext: Any) -> bytes:
            ciphertext.save(str(file))
            return file.read_bytes()

        yield save_to_file
