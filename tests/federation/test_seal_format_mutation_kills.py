"""The SEAL/TenSEAL ciphertext parser, refusal by refusal (#18 item 6).

:func:`read_chunk` reads untrusted bytes from sites: each test here builds one chunk
from a real TenSEAL encryption (the coefficients of a real ciphertext), changes one
field, and checks the exact outcome: the coefficients copied, ``None`` for an encoding
left to TenSEAL, or :class:`CiphertextError` with its message. The writer's bytes are
pinned the same way. The mutation run on ``federation/_seal_format.py`` found these
unchecked.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from tensorguard.federation._context import PublicFederation
from tensorguard.federation._errors import CiphertextError
from tensorguard.federation._masking import mask_level
from tensorguard.federation._packing import encrypt_vector
from tensorguard.federation._seal_format import (
    CIPHERTEXT_FIELDS,
    PARMS_ID,
    SEAL_HEADER,
    CiphertextShape,
    ciphertext_head,
    ciphertext_saver,
    ckks_vector_proto,
    protobuf_varint,
    read_chunk,
    seal_header,
    write_chunk_parts,
)

WHAT = "ciphertext chunk 3"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
RAW, RLE, COMPRESSED, RESERVED = 0, 1, 2, 3


@dataclass(frozen=True)
class Chunk:
    """One real ciphertext: the round's shape, the proto TenSEAL wrote, its
    coefficients and the slot count it holds."""

    shape: CiphertextShape
    tenseal_proto: bytes
    coefficients: np.ndarray
    size: int

    @property
    def members(self) -> bytes:
        """The uncompressed SEAL members (everything after the outer SEAL header)."""
        return ciphertext_head(self.shape, self.shape.scale)[SEAL_HEADER.size :] + bytes(
            self.coefficients.data
        )

    @property
    def out_bytes(self) -> int:
        return self.coefficients.nbytes


def _version() -> tuple[int, int]:
    header = sealapi.Serialization.SEALHeader()
    return int(header.version_major), int(header.version_minor)


def _seal(members: bytes, compr_mode: int = 0, **fields: int) -> bytes:
    """A SEAL serialisation of ``members``: header fields overridable by name."""
    major, minor = _version()
    values = {
        "magic": 0xA15E,
        "header_size": 16,
        "major": major,
        "minor": minor,
        "compr_mode": compr_mode,
        "reserved": 0,
        "size": 16 + len(members),
    }
    values.update(fields)
    return SEAL_HEADER.pack(*values.values()) + members


def _proto(chunk: Chunk, seal: bytes, size: int | None = None) -> bytes:
    return ckks_vector_proto(chunk.size if size is None else size, seal, chunk.shape.scale)


def _block(kind: int, content: bytes, last: bool, length: int | None = None) -> bytes:
    size = len(content) if length is None else length
    return ((size << 3) | (kind << 1) | int(last)).to_bytes(3, "little") + content


def _raw_blocks(members: bytes, pieces: int = 3) -> bytes:
    step = -(-len(members) // pieces)
    parts = [members[i : i + step] for i in range(0, len(members), step)]
    return b"".join(_block(RAW, part, i == len(parts) - 1) for i, part in enumerate(parts))


def _zstd(blocks: bytes, descriptor: int = 0x00, size_field: bytes = b"") -> bytes:
    """A zstd frame; without the single-segment bit a window byte follows the descriptor."""
    window = b"" if descriptor & 0x20 else b"\x58"
    return ZSTD_MAGIC + bytes([descriptor]) + window + size_field + blocks


def _read(chunk: Chunk, proto: bytes) -> tuple[int | None, np.ndarray]:
    out = np.zeros(chunk.coefficients.shape, dtype="<u8")
    size = read_chunk(memoryview(proto), chunk.shape, WHAT, out.data.cast("B"))
    return size, out


def _refused(chunk: Chunk, proto: bytes) -> str:
    out = bytearray(chunk.out_bytes)
    with pytest.raises(CiphertextError) as caught:
        read_chunk(memoryview(proto), chunk.shape, WHAT, memoryview(out))
    return str(caught.value)


@pytest.fixture(scope="module")
def chunk(public: PublicFederation) -> Chunk:
    """Chunk 0 of a real encrypted update, as TenSEAL wrote it (zstd raw blocks)."""
    params, context = public.params, public.load_context()
    level = mask_level(context, params)
    shape = CiphertextShape(level.parms_id, level.primes, level.degree, params.scale)
    values = np.random.default_rng(5).uniform(-0.5, 0.5, 11)
    payload = encrypt_vector(values, context, params).to_bytes()
    length = int.from_bytes(payload[17:21], "big")
    proto = payload[21 : 21 + length]
    out = np.zeros(shape.coefficient_shape, dtype="<u8")
    size = read_chunk(memoryview(proto), shape, WHAT, out.data.cast("B"))
    assert size is not None
    assert proto[proto.index(b"\x5e\xa1") + 5] == 2, "TenSEAL wrote this chunk with zstd"
    return Chunk(shape, proto, out, size)


# --- what reads ----------------------------------------------------------------------


def test_tenseal_and_uncompressed_and_hand_framed_zstd_chunks_read_the_same(
    chunk: Chunk,
) -> None:
    assert chunk.coefficients[1].any(), "a real ciphertext has c1 != 0"
    uncompressed = _proto(chunk, _seal(chunk.members))
    assert b"".join(write_chunk_parts(chunk.coefficients, chunk.size, chunk.shape)) == (
        uncompressed
    )
    members = chunk.members
    rle_members = members[:-64] + bytes(64)  # the last 8 coefficients zero: one RLE block
    rle = _block(RAW, rle_members[:-64], False) + _block(RLE, b"\x00", True, length=64)
    content = len(members)
    frames = {
        "no content size": _zstd(_raw_blocks(members)),
        "4-byte size": _zstd(_raw_blocks(members), 0x80, content.to_bytes(4, "little")),
        "8-byte size": _zstd(_raw_blocks(members), 0xC0, content.to_bytes(8, "little")),
        "single segment, 4-byte size": _zstd(
            _raw_blocks(members, 1), 0xA0, content.to_bytes(4, "little")
        ),
    }
    expected = chunk.coefficients
    for name, frame in frames.items():
        size, out = _read(chunk, _proto(chunk, _seal(frame, compr_mode=2)))
        assert size == chunk.size, name
        assert np.array_equal(out, expected), name
    size, out = _read(chunk, _proto(chunk, _seal(_zstd(rle), compr_mode=2)))
    assert size == chunk.size
    assert np.array_equal(out.reshape(-1)[:-8], expected.reshape(-1)[:-8])
    assert not out.reshape(-1)[-8:].any()
    assert _read(chunk, uncompressed)[0] == chunk.size


def test_the_proto_size_is_returned_as_written(chunk: Chunk) -> None:
    for size in (0, 1, 127, 128, 4096, 2**35 + 3):
        assert _read(chunk, _proto(chunk, _seal(chunk.members), size))[0] == size


# --- encodings left to TenSEAL -------------------------------------------------------


def test_encodings_this_reader_does_not_implement_are_left_to_tenseal(chunk: Chunk) -> None:
    members = chunk.members
    seal = _seal(members)
    proto = _proto(chunk, seal)
    scale_field = b"\x19" + struct.pack("<d", chunk.shape.scale)
    head = proto[: proto.index(b"\x12")]
    seeded = bytearray(members)
    count_at = PARMS_ID.size + CIPHERTEXT_FIELDS.size + SEAL_HEADER.size
    seeded[count_at : count_at + 8] = struct.pack("<Q", chunk.out_bytes // 8 - 1)
    inner_compressed = bytearray(members)
    inner_compressed[PARMS_ID.size + CIPHERTEXT_FIELDS.size + 5] = 2
    zstd_with = {
        "checksum": _zstd(_raw_blocks(members), 0x04),
        "dictionary": _zstd(_raw_blocks(members), 0x01),
        "dictionary id 2": _zstd(_raw_blocks(members), 0x02),
        "reserved bit": _zstd(_raw_blocks(members), 0x08),
        "compressed block": _zstd(_block(COMPRESSED, members, True)),
        "reserved block": _zstd(_block(RESERVED, members, True)),
    }
    left_over = {
        "empty": b"",
        "one byte": b"\x0a",
        "another first field": b"\x12" + proto[1:],
        "sizes length disagrees": b"\x0a\x02" + proto[2:],
        "scale before the ciphertext": scale_field + proto[:-9],
        "trailing byte": proto + b"\x00",
        "missing byte": proto[:-1],
        "ciphertext longer than the proto": head
        + b"\x12"
        + protobuf_varint(len(seal) + 1)
        + seal
        + scale_field,
        "scale with another tag": proto[:-9] + b"\x11" + proto[-8:],
        "another SEAL version": _proto(chunk, _seal(members, major=3)),
        "another SEAL minor version": _proto(chunk, _seal(members, minor=_version()[1] + 1)),
        "zlib": _proto(chunk, _seal(members, compr_mode=1)),
        "compression mode 3": _proto(chunk, _seal(members, compr_mode=3)),
        "seeded (another count)": _proto(chunk, _seal(bytes(seeded))),
        "compressed coefficient array": _proto(chunk, _seal(bytes(inner_compressed))),
        **{
            f"zstd {name}": _proto(chunk, _seal(frame, compr_mode=2))
            for name, frame in zstd_with.items()
        },
    }
    for name, data in left_over.items():
        out = bytearray(b"\xaa" * chunk.out_bytes)
        assert read_chunk(memoryview(data), chunk.shape, WHAT, memoryview(out)) is None, name


# --- refusals ------------------------------------------------------------------------


def test_malformed_framing_is_refused_by_name(chunk: Chunk) -> None:
    members = chunk.members
    proto = _proto(chunk, _seal(members))
    seal_at = proto.index(b"\x5e\xa1")
    too_long = b"\x0a" + b"\xff" * 10 + b"\x01"
    assert _refused(chunk, too_long) == (
        f"{WHAT} is malformed (a protobuf varint is longer than 10 bytes)"
    )
    assert _refused(chunk, b"\x0a\xff").startswith(f"{WHAT} is malformed (")
    other_scale = proto[:-8] + struct.pack("<d", chunk.shape.scale * 2)
    assert _refused(chunk, other_scale) == f"{WHAT} is not at the federation's scale"
    short = _proto(chunk, _seal(b"")[:15])
    assert _refused(chunk, short) == f"{WHAT} is truncated in its SEAL header"
    for field, value in (("magic", 0xA15F), ("header_size", 17), ("reserved", 1)):
        bad = _proto(chunk, _seal(members, **{field: value}))
        assert _refused(chunk, bad) == f"{WHAT} has no valid SEAL header", field
    declared = len(members) + 16
    for size in (declared - 1, declared + 1):
        bad = _proto(chunk, _seal(members, size=size))
        assert _refused(chunk, bad) == (
            f"{WHAT}: SEAL header says {size} bytes, {declared} present"
        )
    assert proto[seal_at + 16 :].startswith(members)


def test_every_ciphertext_field_must_be_the_rounds(chunk: Chunk) -> None:
    members = chunk.members
    parms_id, fields = PARMS_ID.size, CIPHERTEXT_FIELDS.size
    ntt, size, degree, primes, scale, correction = CIPHERTEXT_FIELDS.unpack_from(members, parms_id)
    changes = {
        "parms_id": PARMS_ID.pack(*chunk.shape.parms_id[:3], chunk.shape.parms_id[3] ^ 1),
        "not NTT": CIPHERTEXT_FIELDS.pack(0, size, degree, primes, scale, correction),
        "size 3": CIPHERTEXT_FIELDS.pack(ntt, 3, degree, primes, scale, correction),
        "degree": CIPHERTEXT_FIELDS.pack(ntt, size, degree // 2, primes, scale, correction),
        "primes": CIPHERTEXT_FIELDS.pack(ntt, size, degree, primes + 1, scale, correction),
        "scale": CIPHERTEXT_FIELDS.pack(ntt, size, degree, primes, scale * 2, correction),
        "correction": CIPHERTEXT_FIELDS.pack(ntt, size, degree, primes, scale, 2),
    }
    for name, new in changes.items():
        at = 0 if name == "parms_id" else parms_id
        bad = members[:at] + new + members[at + len(new) :]
        assert _refused(chunk, _proto(chunk, _seal(bad))) == (
            f"{WHAT} is not a size-2 NTT-form ciphertext at the federation's data level and scale"
        ), name
    assert (ntt, size, degree, primes, scale, correction) == (
        1,
        2,
        chunk.shape.degree,
        len(chunk.shape.primes),
        chunk.shape.scale,
        1,
    )
    truncated = _proto(chunk, _seal(members[: parms_id + fields - 1]))
    assert _refused(chunk, truncated) == f"{WHAT} is truncated in its ciphertext fields"


def test_the_coefficient_array_must_be_complete_and_fit(chunk: Chunk) -> None:
    members = chunk.members
    array_at = PARMS_ID.size + CIPHERTEXT_FIELDS.size
    expected = 16 + 8 + chunk.out_bytes
    bad_magic = bytearray(members)
    bad_magic[array_at] ^= 1
    assert _refused(chunk, _proto(chunk, _seal(bytes(bad_magic)))) == (
        f"{WHAT} has no valid SEAL header"
    )
    head_only = members[: array_at + 10]
    assert _refused(chunk, _proto(chunk, _seal(head_only))) == (
        f"{WHAT} is truncated in its SEAL header"
    )
    no_count = members[: array_at + 16]
    assert (
        read_chunk(
            memoryview(_proto(chunk, _seal(no_count))), chunk.shape, WHAT, memoryview(bytearray(8))
        )
        is None
    )
    short = members[:-8]
    assert _refused(chunk, _proto(chunk, _seal(short))) == (
        f"{WHAT}: its coefficient array is {expected - 8} bytes, not {expected}"
    )
    long = members + bytes(8)
    assert _refused(chunk, _proto(chunk, _seal(long))) == (
        f"{WHAT}: its coefficient array is {expected + 8} bytes, not {expected}"
    )
    wrong_total = bytearray(members)
    struct.pack_into("<Q", wrong_total, array_at + 8, expected + 8)
    assert _refused(chunk, _proto(chunk, _seal(bytes(wrong_total)))) == (
        f"{WHAT}: its coefficient array is {expected} bytes, not {expected}"
    )
    proto = _proto(chunk, _seal(members))
    for out_size in (chunk.out_bytes - 8, chunk.out_bytes + 8):
        with pytest.raises(CiphertextError) as caught:
            read_chunk(memoryview(proto), chunk.shape, WHAT, memoryview(bytearray(out_size)))
        assert str(caught.value) == (
            f"{WHAT}: its coefficient array is {expected} bytes, not {expected}"
        )


def test_zstd_frames_are_refused_by_name(chunk: Chunk) -> None:
    members = chunk.members
    content = len(members)
    limit_plus_one = _block(RAW, members, False) + _block(RLE, b"\x00", True, length=1)
    frames = {
        "not zstd": (b"\x28\xb5\x2f\xfe" + _zstd(_raw_blocks(members))[4:], "is not a zstd frame"),
        "no block": (_zstd(b""), "is truncated in a zstd block header"),
        "two bytes of a block header": (
            _zstd(b"\x01\x00"),
            "is truncated in a zstd block header",
        ),
        "no last block": (
            _zstd(_block(RAW, members, False)),
            "is truncated in a zstd block header",
        ),
        "raw block overruns": (
            _zstd(_block(RAW, members, True, length=content + 1)),
            "is truncated in a zstd block",
        ),
        "RLE block without its byte": (
            _zstd(_block(RAW, members[:-8], False) + _block(RLE, b"", True, length=8)),
            "is truncated in a zstd block",
        ),
        "one byte beyond the round's shape": (
            _zstd(limit_plus_one),
            "holds more than a ciphertext of the round's shape",
        ),
        "bytes after the frame": (
            _zstd(_raw_blocks(members)) + b"\x00",
            "has bytes after its zstd frame",
        ),
        "declared size too large": (
            _zstd(_raw_blocks(members), 0x80, (content + 1).to_bytes(4, "little")),
            ": zstd frame content is not the size it declares",
        ),
        "declared size too small": (
            _zstd(_raw_blocks(members), 0x80, (content - 1).to_bytes(4, "little")),
            ": zstd frame content is not the size it declares",
        ),
    }
    for name, (frame, message) in frames.items():
        separator = "" if message.startswith(":") else " "
        assert _refused(chunk, _proto(chunk, _seal(frame, compr_mode=2))) == (
            f"{WHAT}{separator}{message}"
        ), name


def test_small_declared_content_sizes_count_as_zstd_defines_them(chunk: Chunk) -> None:
    """A 2-byte size field counts from 256, a single-segment frame's 1-byte field from 0:
    a frame of ``small`` bytes that declares them passes the zstd checks and is refused
    only for its short coefficient array; one byte off is refused as a zstd frame."""
    small = 1000
    members = chunk.members[:small]
    short_array = (
        f"{WHAT}: its coefficient array is {small - 73} bytes, not {16 + 8 + chunk.out_bytes}"
    )
    wrong_size = f"{WHAT}: zstd frame content is not the size it declares"
    cases = [
        (_zstd(_raw_blocks(members), 0x40, (small - 256).to_bytes(2, "little")), short_array),
        (_zstd(_raw_blocks(members), 0x40, (small - 255).to_bytes(2, "little")), wrong_size),
        (_zstd(_raw_blocks(members), 0x40, small.to_bytes(2, "little")), wrong_size),
        (
            _zstd(_raw_blocks(members[:200]), 0x20, bytes([200])),
            short_array.replace(f"is {small - 73} bytes", "is 127 bytes"),
        ),
        (_zstd(_raw_blocks(members[:200]), 0x20, bytes([201])), wrong_size),
        (
            _zstd(_raw_blocks(members[:200]), 0x00, b""),
            short_array.replace(f"is {small - 73} bytes", "is 127 bytes"),
        ),
    ]
    for index, (frame, message) in enumerate(cases):
        assert _refused(chunk, _proto(chunk, _seal(frame, compr_mode=2))) == message, index


def test_a_huge_rle_claim_is_refused_before_it_is_expanded(chunk: Chunk) -> None:
    """Every RLE block can claim 2 MiB from 4 bytes: the frame is refused at the first
    block that passes the round's shape."""
    huge = (1 << 21) - 1
    frame = _zstd(_block(RLE, b"\x07", False, length=huge) * 3 + _block(RAW, b"", True))
    assert _refused(chunk, _proto(chunk, _seal(frame, compr_mode=2))) == (
        f"{WHAT} holds more than a ciphertext of the round's shape"
    )


# --- the writer ----------------------------------------------------------------------


def test_protobuf_varints_and_the_proto_are_byte_exact() -> None:
    cases = {
        0: b"\x00",
        1: b"\x01",
        127: b"\x7f",
        128: b"\x80\x01",
        300: b"\xac\x02",
        16383: b"\xff\x7f",
        16384: b"\x80\x80\x01",
        2**64 - 1: b"\xff" * 9 + b"\x01",
    }
    for value, encoded in cases.items():
        assert protobuf_varint(value) == encoded, value
    assert ckks_vector_proto(300, b"abc", 2.0**40) == (
        b"\x0a\x02\xac\x02\x12\x03abc\x19" + struct.pack("<d", 2.0**40)
    )


def test_the_seal_headers_written_are_seals(chunk: Chunk) -> None:
    major, minor = _version()
    assert seal_header(1234) == struct.pack("<HBBBBHQ", 0xA15E, 16, major, minor, 0, 0, 1234)
    head = ciphertext_head(chunk.shape, 3.5)
    coefficient_bytes = chunk.out_bytes
    count = coefficient_bytes // 8
    members_head = (
        PARMS_ID.pack(*chunk.shape.parms_id)
        + CIPHERTEXT_FIELDS.pack(1, 2, chunk.shape.degree, len(chunk.shape.primes), 3.5, 1)
        + seal_header(16 + 8 + coefficient_bytes)
        + struct.pack("<Q", count)
    )
    assert head == seal_header(16 + len(members_head) + coefficient_bytes) + members_head


def test_the_writer_refuses_coefficients_of_another_shape_or_type(chunk: Chunk) -> None:
    good = chunk.coefficients
    message = f"coefficients must be <u8 of shape {chunk.shape.coefficient_shape}"
    bad_arrays: list[Any] = [good[:, :, :-1], good.astype(">u8"), good.astype(np.int64), good[:1]]
    for bad in bad_arrays:
        with pytest.raises(CiphertextError) as caught:
            write_chunk_parts(bad, chunk.size, chunk.shape)
        assert str(caught.value) == message


# --- saving sealapi ciphertexts ------------------------------------------------------


def _sealapi_ciphertext(public: PublicFederation) -> sealapi.Ciphertext:
    context = public.load_context()
    seal = context.seal_context().data
    plaintext, ciphertext = sealapi.Plaintext(), sealapi.Ciphertext()
    sealapi.CKKSEncoder(seal).encode([0.5] * 3, public.params.scale, plaintext)
    sealapi.Encryptor(seal, context.public_key().data).encrypt(plaintext, ciphertext)
    return ciphertext


def _memfds() -> Iterator[tuple[int, str]]:
    for entry in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{entry}")
        except FileNotFoundError:  # the directory listing's own descriptor
            continue
        if target.startswith("/memfd:"):
            yield int(entry), target


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux-only")
def test_the_in_memory_file_is_named_close_on_exec_and_closed(public: PublicFederation) -> None:
    ciphertext = _sealapi_ciphertext(public)
    before = set(_memfds())
    with ciphertext_saver() as save:
        data = save(ciphertext)
        opened = set(_memfds()) - before
        assert [target for _, target in opened] == ["/memfd:tg-ckks (deleted)"]
        ((descriptor, _),) = opened
        assert fcntl.fcntl(descriptor, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert set(_memfds()) == before
    assert data[:2] == b"\x5e\xa1"
    assert len(data) == struct.unpack_from("<Q", data, 8)[0]


def test_without_memfd_the_default_scratch_is_in_dev_shm(
    public: PublicFederation, monkeypatch: pytest.MonkeyPatch
) -> None:
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK | os.X_OK)):
        pytest.skip("/dev/shm is not writable here")
    ciphertext = _sealapi_ciphertext(public)
    monkeypatch.delattr(os, "memfd_create", raising=False)
    before = set(shm.glob("tg-ckks-*"))
    with ciphertext_saver() as save:
        data = save(ciphertext)
        created = set(shm.glob("tg-ckks-*")) - before
        assert len(created) == 1
        assert [p.name for p in next(iter(created)).iterdir()] == ["chunk.seal"]
    assert set(shm.glob("tg-ckks-*")) == before
    assert data[:2] == b"\x5e\xa1"


def test_block_boundaries_inside_the_head_and_rle_between_raw_blocks(chunk: Chunk) -> None:
    """The coefficients start 97 bytes into the members: blocks that end before and
    at that point are skipped whole, and an RLE block followed by more blocks expands
    its one byte only."""
    members = chunk.members
    head = PARMS_ID.size + CIPHERTEXT_FIELDS.size + SEAL_HEADER.size + 8
    assert head == 97
    zeroed = members[: len(members) - 128] + bytes(64) + members[len(members) - 64 :]
    cases = {
        "50 + 47 + rest": (
            _block(RAW, members[:50], False)
            + _block(RAW, members[50:97], False)
            + _block(RAW, members[97:], True),
            members,
        ),
        "60 + rest": (_block(RAW, members[:60], False) + _block(RAW, members[60:], True), members),
        "raw, RLE, raw": (
            _block(RAW, zeroed[:-128], False)
            + _block(RLE, b"\x00", False, length=64)
            + _block(RAW, zeroed[-64:], True),
            zeroed,
        ),
    }
    for name, (blocks, content) in cases.items():
        size, out = _read(chunk, _proto(chunk, _seal(_zstd(blocks), compr_mode=2)))
        assert size == chunk.size, name
        assert bytes(out.data) == content[head:], name
    fields_only = members[: PARMS_ID.size + CIPHERTEXT_FIELDS.size]
    assert _refused(chunk, _proto(chunk, _seal(fields_only))) == (
        f"{WHAT} is truncated in its SEAL header"
    )
