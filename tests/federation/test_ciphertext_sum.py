"""The aggregator's coefficient-wise sum: equal to SEAL's, strict on untrusted bytes."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as sealapi

from tensorguard.federation._ciphertext_sum import CiphertextSum
from tensorguard.federation._context import PublicFederation, SecretFederation
from tensorguard.federation._errors import CiphertextError
from tensorguard.federation._masking import mask_level
from tensorguard.federation._packing import (
    Packing,
    decrypt_vector,
    encrypt_vector,
    load_encrypted_vector,
)
from tensorguard.federation._seal_format import SEAL_HEADER, ciphertext_saver

TOLERANCE = 1e-9
SEAL_MAGIC_BYTES = b"\x5e\xa1\x10"


def _values(length: int, seed: int) -> np.ndarray:
    """Odd length, negative values, and a large value in the last slot."""
    values = np.random.default_rng(seed).uniform(-0.5, 0.5, length)
    values[-1] = -0.9 + 0.1 * seed
    return values


def _sum_of(
    public: PublicFederation, payloads: list[bytes], length: int, packing: Packing
) -> bytes:
    total = CiphertextSum(public.load_context(), public.params, length, packing)
    for payload in payloads:
        total.add(payload)
    return total.to_bytes()


def _decrypt(secret: SecretFederation, payload: bytes, length: int, packing: Packing) -> np.ndarray:
    loaded = load_encrypted_vector(
        payload, secret.context, secret.public.params, length, packing=packing
    )
    return decrypt_vector(loaded, secret.context)


def _chunk_starts(payload: bytes) -> list[int]:
    """Where each chunk's proto starts in a TGCV payload."""
    offset, starts = 17, []
    count = int.from_bytes(payload[13:17], "big")
    for _ in range(count):
        length = int.from_bytes(payload[offset : offset + 4], "big")
        starts.append(offset + 4)
        offset += 4 + length
    return starts


def _seal_start(payload: bytes, chunk: int) -> int:
    """Where chunk ``chunk``'s SEAL serialisation starts."""
    return payload.index(SEAL_MAGIC_BYTES, _chunk_starts(payload)[chunk])


@pytest.mark.parametrize("packing", [Packing.COMPLEX, Packing.REAL])
def test_the_coefficient_sum_is_the_ciphertext_seal_adds(
    public: PublicFederation, secret: SecretFederation, packing: Packing
) -> None:
    params, context = public.params, public.load_context()
    length = packing.values_per_ciphertext(params) * 2 + 5  # three chunks, the last short
    values = [_values(length, seed) for seed in range(3)]
    vectors = [encrypt_vector(v, context, params, packing) for v in values]
    ours = _sum_of(public, [v.to_bytes() for v in vectors], length, packing)
    by_seal = vectors[0] + vectors[1] + vectors[2]
    # SEAL's sum, re-written by the same writer, is byte for byte ours
    assert _sum_of(public, [by_seal.to_bytes()], length, packing) == ours
    decrypted = _decrypt(secret, ours, length, packing)
    assert np.max(np.abs(decrypted - sum(values))) < 3 * TOLERANCE


def test_more_updates_than_the_unreduced_headroom_still_sum_exactly(
    public: PublicFederation, secret: SecretFederation
) -> None:
    """60-bit primes leave room for 15 unreduced additions; 20 force a reduction."""
    params, context = public.params, public.load_context()
    length = 301
    values = [_values(length, seed) / 20 for seed in range(20)]
    payloads = [encrypt_vector(v, context, params).to_bytes() for v in values]
    decrypted = _decrypt(
        secret, _sum_of(public, payloads, length, Packing.COMPLEX), length, Packing.COMPLEX
    )
    assert np.max(np.abs(decrypted - sum(values))) < 20 * TOLERANCE


def _replace(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new) :]


def _coefficient_at_prime(payload: bytes, public: PublicFederation) -> bytes:
    """Chunk 1's first c0 coefficient set to the prime itself (SEAL: not reduced)."""
    seal = _seal_start(payload, 1)
    array = seal + SEAL_HEADER.size + 32 + 41 + SEAL_HEADER.size + 8
    q = mask_level(public.load_context(), public.params).primes[0]
    return _replace(payload, array, struct.pack("<Q", q))


def _transparent(payload: bytes, public: PublicFederation) -> bytes:
    """Chunk 1 with c1 = 0 (an unencrypted 'ciphertext')."""
    seal = _seal_start(payload, 1)
    degree = public.params.poly_modulus_degree
    c1 = seal + SEAL_HEADER.size + 32 + 41 + SEAL_HEADER.size + 8 + 8 * degree
    return _replace(payload, c1, bytes(8 * degree))


def _scale_field(payload: bytes, public: PublicFederation) -> bytes:
    del public
    seal = _seal_start(payload, 0)
    return _replace(payload, seal + SEAL_HEADER.size + 32 + 1 + 24, struct.pack("<d", 2.0**40))


def _seal_magic(payload: bytes, public: PublicFederation) -> bytes:
    del public
    return _replace(payload, _seal_start(payload, 2), b"\x00\x00")


def _seal_size(payload: bytes, public: PublicFederation) -> bytes:
    del public
    seal = _seal_start(payload, 0)
    size = struct.unpack_from("<Q", payload, seal + 8)[0]
    return _replace(payload, seal + 8, struct.pack("<Q", size + 8))


def _with_seal_bytes(payload: bytes, chunk: int, seal: bytes) -> bytes:
    """``payload`` with chunk ``chunk``'s SEAL serialisation replaced by ``seal``, the
    proto's and the frame's lengths adjusted to match."""
    start = _chunk_starts(payload)[chunk]
    length = int.from_bytes(payload[start - 4 : start], "big")
    head = payload[start : _seal_start(payload, chunk)]
    proto = head[: head.index(b"\x12") + 1] + _varint(len(seal)) + seal
    proto += payload[start + length - 9 : start + length]  # the scale field
    end = start + length
    return payload[: start - 4] + len(proto).to_bytes(4, "big") + proto + payload[end:]


def _seal_bytes(payload: bytes, chunk: int) -> bytes:
    seal = _seal_start(payload, chunk)
    size = struct.unpack_from("<Q", payload, seal + 8)[0]
    return payload[seal : seal + size]


def _truncated_chunk(payload: bytes, public: PublicFederation) -> bytes:
    """Chunk 0 without its last coefficient, every length adjusted to match."""
    del public
    seal = _seal_bytes(payload, 0)[:-8]
    return _with_seal_bytes(payload, 0, _replace(seal, 8, struct.pack("<Q", len(seal))))


UNCOMPRESSED_MUTATIONS: dict[str, tuple[Callable[[bytes, PublicFederation], bytes], str]] = {
    "coefficient-not-reduced": (_coefficient_at_prime, "chunk 1 has a coefficient"),
    "transparent": (_transparent, "chunk 1 is transparent"),
    "scale": (_scale_field, "chunk 0 is not a size-2 NTT-form ciphertext"),
    "seal-magic": (_seal_magic, "chunk 2 has no valid SEAL header"),
    "seal-size": (_seal_size, "SEAL header says"),
    "short-array": (_truncated_chunk, "coefficient array is"),
}


@pytest.mark.parametrize("name", sorted(UNCOMPRESSED_MUTATIONS))
def test_a_malformed_ciphertext_is_refused_by_name_and_the_sum_is_unchanged(
    public: PublicFederation, secret: SecretFederation, name: str
) -> None:
    """Uncompressed chunks (what the aggregator writes) with one field broken."""
    params, context = public.params, public.load_context()
    length = 2 * params.poly_modulus_degree + 5
    values = [_values(length, seed) for seed in range(2)]
    payloads = [encrypt_vector(v, context, params).to_bytes() for v in values]
    uncompressed = _sum_of(public, [payloads[1]], length, Packing.COMPLEX)
    mutate, message = UNCOMPRESSED_MUTATIONS[name]
    total = CiphertextSum(context, params, length, Packing.COMPLEX)
    total.add(payloads[0])
    with pytest.raises(CiphertextError, match=message):
        total.add(mutate(uncompressed, public))
    total.add(uncompressed)
    decrypted = _decrypt(secret, total.to_bytes(), length, Packing.COMPLEX)
    assert np.max(np.abs(decrypted - sum(values))) < 2 * TOLERANCE
    assert total.count == 2


def _zstd_frame(payload: bytes) -> int:
    """Where chunk 0's zstd frame starts (TenSEAL writes zstd)."""
    seal = _seal_start(payload, 0)
    assert payload[seal + 5] == 2, "TenSEAL wrote this chunk without zstd"
    return seal + SEAL_HEADER.size


def _block_overruns(payload: bytes) -> bytes:
    """The last raw block of chunk 0 claims 8 bytes more than the frame holds."""
    first = _zstd_frame(payload) + 9  # magic, descriptor, 4-byte content size
    size = int.from_bytes(payload[first : first + 3], "little") >> 3
    second = first + 3 + size
    header = int.from_bytes(payload[second : second + 3], "little")
    assert header & 1, "expected two blocks"
    return _replace(payload, second, (header + (8 << 3)).to_bytes(3, "little"))


def _rle_bomb(payload: bytes) -> bytes:
    """Chunk 0's zstd frame replaced by 21 RLE blocks of 2 MiB each (4 bytes apiece)."""
    block = (((1 << 21) - 1) << 3 | 1 << 1).to_bytes(3, "little") + b"\x07"
    last = (((1 << 21) - 1) << 3 | 1 << 1 | 1).to_bytes(3, "little") + b"\x07"
    frame = b"\x28\xb5\x2f\xfd\x00\x00" + block * 20 + last
    seal = _seal_bytes(payload, 0)[: SEAL_HEADER.size] + frame
    return _with_seal_bytes(payload, 0, _replace(seal, 8, struct.pack("<Q", len(seal))))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


def _compressed_block(payload: bytes) -> bytes:
    """The first block marked compressed: only TenSEAL reads that, and refuses garbage."""
    frame = _zstd_frame(payload)
    header = int.from_bytes(payload[frame + 9 : frame + 12], "little")
    return _replace(payload, frame + 9, (header | (2 << 1)).to_bytes(3, "little"))


ZSTD_MUTATIONS: dict[str, tuple[Callable[[bytes], bytes], str]] = {
    "block-overruns": (_block_overruns, "truncated in a zstd block"),
    "rle-bomb": (_rle_bomb, "holds more than a ciphertext"),
    "compressed-garbage": (_compressed_block, "does not parse under the federation context"),
    "truncated-payload": (lambda d: d[: len(d) // 2], "truncated"),
    "trailing-bytes": (lambda d: d + b"\x00", "trailing"),
}


@pytest.mark.parametrize("name", sorted(ZSTD_MUTATIONS))
def test_garbled_site_chunks_are_refused_cleanly(public: PublicFederation, name: str) -> None:
    """A site's chunks as TenSEAL writes them (zstd raw blocks), garbled."""
    params, context = public.params, public.load_context()
    length = 2 * params.poly_modulus_degree + 5
    payload = encrypt_vector(_values(length, 1), context, params).to_bytes()
    mutate, message = ZSTD_MUTATIONS[name]
    total = CiphertextSum(context, params, length, Packing.COMPLEX)
    with pytest.raises(CiphertextError, match=message):
        total.add(mutate(payload))
    assert total.count == 0


def test_an_encoding_only_tenseal_reads_is_summed_through_tenseal(
    public: PublicFederation, secret: SecretFederation
) -> None:
    """A chunk whose proto fields come in another order (valid protobuf, not what
    TenSEAL writes) sends its update through TenSEAL; both parts of the sum add up."""
    params, context = public.params, public.load_context()
    length = 2 * params.poly_modulus_degree + 5
    values = [_values(length, seed) for seed in range(3)]
    payloads = [encrypt_vector(v, context, params).to_bytes() for v in values]
    start = _chunk_starts(payloads[1])[1]
    size = int.from_bytes(payloads[1][start - 4 : start], "big")
    proto = payloads[1][start : start + size]
    reordered = proto[-9:] + proto[:-9]
    payloads[1] = payloads[1][:start] + reordered + payloads[1][start + size :]
    total = CiphertextSum(context, params, length, Packing.COMPLEX)
    for payload in payloads:
        total.add(payload)
    result = total.to_bytes()
    assert total.to_bytes() == result, "writing the sum must not change it"
    assert result[_seal_start(result, 0) + 5] == 2, "expected TenSEAL's (zstd) output"
    decrypted = _decrypt(secret, result, length, Packing.COMPLEX)
    assert np.max(np.abs(decrypted - sum(values))) < 3 * TOLERANCE


def test_a_payload_in_another_packing_is_refused_by_name(public: PublicFederation) -> None:
    params, context = public.params, public.load_context()
    payload = encrypt_vector(np.ones(10), context, params, Packing.REAL).to_bytes()
    total = CiphertextSum(context, params, 10, Packing.COMPLEX)
    with pytest.raises(CiphertextError, match="real-packed"):
        total.add(payload)
    with pytest.raises(CiphertextError, match="no encrypted update"):
        total.to_bytes()


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="memfd_create is Linux-only")
def test_sealapi_ciphertexts_are_saved_without_a_named_file(
    public: PublicFederation, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The site's complex encryption reads SEAL's bytes back from an anonymous in-memory
    file; where memfd_create is missing, a private temporary directory gives the same
    bytes, and neither leaves anything behind."""
    context = public.load_context()
    seal = context.seal_context().data
    plaintext, ciphertext = sealapi.Plaintext(), sealapi.Ciphertext()
    sealapi.CKKSEncoder(seal).encode([0.25 + 0.5j] * 7, public.params.scale, plaintext)
    sealapi.Encryptor(seal, context.public_key().data).encrypt(plaintext, ciphertext)
    with ciphertext_saver(tmp_path) as save:
        in_memory = save(ciphertext)
        assert list(tmp_path.iterdir()) == []
        assert save(ciphertext) == in_memory
    assert in_memory[:2] == b"\x5e\xa1"
    monkeypatch.delattr(os, "memfd_create")
    with ciphertext_saver(tmp_path) as save:
        assert save(ciphertext) == in_memory
        assert len(list(tmp_path.iterdir())) == 1
    assert list(tmp_path.iterdir()) == []
