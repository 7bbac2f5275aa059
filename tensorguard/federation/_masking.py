"""Pairwise additive masks on CKKS ciphertexts (secure aggregation over CKKS).

Every pair of sites ``a < b`` (site ids compared as strings) shares a per-round seed
(see :mod:`tensorguard.federation._pairwise`). For ciphertext chunk ``j`` the seed
expands into one polynomial ``m_ab`` with coefficients uniform modulo each RNS prime
``q_i`` of the ciphertext's level; site ``a`` adds ``+m_ab`` and site ``b`` adds
``-m_ab`` (``q_i - m_ab``) to the ``c0`` polynomial of its ciphertext. In the sum over
all sites every pair contributes ``m_ab - m_ab = 0 (mod q_i)``. Each site also adds a
self mask ``s_a`` from a seed only it holds (double masking); one site's ciphertext
decrypts to its values plus uniformly random polynomials: noise. The custodian removes
the accepted sites' self masks (and the dropped sites' pairwise residue) with the seeds
the survivors reveal (:func:`unmask_aggregate`), which leaves the exact sum.

Expansion
    For chunk ``j`` and prime index ``i`` a stream key
    ``HKDF-SHA256(seed, salt=MASK_LABEL, info=encode_info(chunk u64, i u32, q_i u64,
    N u32))`` keys AES-256-CTR (zero initial counter block; every key is used for one
    stream only). The keystream is read as little-endian 64-bit words, each cut to
    ``bit_length(q_i)`` bits and kept only if below ``q_i`` (rejection sampling, so each
    value is exactly uniform on ``[0, q_i)``), until ``N`` values are kept. The
    keystream is prefix-consistent, so the result does not depend on how many words are
    drawn at a time. (AES-CTR rather than SHAKE-256: about eight times faster here.)

Why the NTT form does not matter
    SEAL stores CKKS ciphertexts in NTT form. The NTT is a bijection on polynomials
    modulo ``q_i`` and is linear, so uniform NTT-domain values are the NTT of a uniform
    polynomial, and adding in the NTT domain is adding polynomials. The masks are
    therefore added to the stored values directly.

How the ciphertext is modified (the approach and why)
    SEAL's coefficient array is not reachable from a ``CKKSVector`` in Python:
    ``sealapi.Ciphertext.data(i)`` returns only the first coefficient of polynomial
    ``i``, ``dyn_array`` has no binding, and TenSEAL serialises ciphertexts with zstd
    (:mod:`tensorguard.federation._seal_format` reads the raw blocks zstd stores
    incompressible residues in, but not compressed ones). Reading ``c0`` is unnecessary
    though: the mask is *added*. This module writes the mask as a second, transparent
    ciphertext ``(m, 0)`` in SEAL's own uncompressed serialisation (``compr_mode``
    none; SEALHeader, ``parms_id``, NTT flag, size, N, prime count, scale, correction
    factor, then the coefficient ``DynArray`` with its own header), wraps it in
    TenSEAL's ``CKKSVectorProto`` (sizes, ciphertexts, scale), loads it with
    ``ts.ckks_vector_from`` (so SEAL validates metadata and checks every coefficient is
    below its prime) and lets SEAL add it: ``(c0 + m, c1)``, reduced modulo each prime
    in C++. The result is an ordinary ``CKKSVector``: it serialises into the unchanged
    TGCV wire format and :func:`~tensorguard.federation._packing.load_encrypted_vector`
    accepts it (same level and scale, not transparent). The level's primes come from a
    ``sealapi.SEALContext`` rebuilt from the federation parameters and are used only
    if its ``parms_id`` chain equals the TenSEAL context's, so a mismatch is refused
    rather than masked with the wrong moduli.

Unmasking
    If sites ``D`` drop after the others masked, the sum over the accepted sites ``A``
    carries ``sum over s in A of s_s`` plus ``sum over s in A, d in D of sign(s, d) *
    m_sd``. With the seeds the survivors reveal, :func:`unmask_aggregate` recomputes that
    offset and adds its negation, which makes the aggregate exact again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt
import tenseal as ts
import tenseal.sealapi as sealapi
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tensorguard.crypto import encode_info, hkdf_sha256
from tensorguard.federation._errors import CiphertextError, FederationError
from tensorguard.federation._packing import EncryptedVector, sole_ciphertext
from tensorguard.federation._params import FederationParams
from tensorguard.federation._seal_format import (
    CIPHERTEXT_SIZE,
    CiphertextShape,
    ciphertext_head,
    ckks_vector_proto_parts,
)

MASK_LABEL: Final = b"tensorguard/federation/ckks-mask/v1"
SEED_SIZE: Final = 32
"""Bytes of a per-round pairwise seed."""

UInt64Array = npt.NDArray[np.uint64]


class MaskingError(FederationError):
    """A mask could not be derived or applied (wrong level, seed, or SEAL layout)."""


@dataclass(frozen=True)
class SiteMaskSeeds:
    """What one site masks one round's update with: a seed per peer and its self seed."""

    pair_seeds: Mapping[str, bytes] = field(repr=False)
    self_seed: bytes = field(repr=False)


@dataclass(frozen=True)
class RevealedMasks:
    """The seeds the custodian needs to unmask a round's sum: ``(survivor, dropped) ->
    pair seed`` for every dropped peer and each accepted site's self seed."""

    pair_seeds: Mapping[tuple[str, str], bytes] = field(repr=False)
    self_seeds: Mapping[str, bytes] = field(repr=False)


@dataclass(frozen=True)
class MaskLevel:
    """The ciphertext level masks are drawn for: its ``parms_id``, primes and degree."""

    parms_id: tuple[int, int, int, int]
    primes: tuple[int, ...]
    degree: int

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of one mask polynomial in RNS form: ``(primes, N)``."""
        return (len(self.primes), self.degree)


def mask_level(context: ts.Context, params: FederationParams) -> MaskLevel:
    """The data level of ``context`` (where every federation ciphertext sits).

    The primes are read from a ``sealapi.SEALContext`` built from ``params`` and are
    returned only if its key and data ``parms_id`` equal those of ``context``.
    """
    try:
        moduli = sealapi.CoeffModulus.Create(
            params.poly_modulus_degree, list(params.coeff_mod_bit_sizes)
        )
        parms = sealapi.EncryptionParameters(sealapi.SCHEME_TYPE.CKKS)
        parms.set_poly_modulus_degree(params.poly_modulus_degree)
        parms.set_coeff_modulus(moduli)
        rebuilt = sealapi.SEALContext(parms, True, sealapi.SEC_LEVEL_TYPE.NONE)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise MaskingError(f"SEAL rejected the federation parameters: {exc}") from exc
    seal = context.seal_context().data
    if list(rebuilt.key_parms_id()) != list(seal.key_parms_id()) or list(
        rebuilt.first_parms_id()
    ) != list(seal.first_parms_id()):
        raise MaskingError(
            "the CKKS context's moduli are not the ones the federation parameters "
            "generate (parms_id differs); load the context and parameters from the same "
            "key ceremony"
        )
    data_level = rebuilt.first_context_data()
    primes = tuple(int(modulus.value()) for modulus in data_level.parms().coeff_modulus())
    parms_id = tuple(int(word) for word in seal.first_parms_id())
    if len(parms_id) != 4 or not primes:
        raise MaskingError("unexpected SEAL parms_id or empty coefficient modulus")
    return MaskLevel(
        (parms_id[0], parms_id[1], parms_id[2], parms_id[3]), primes, params.poly_modulus_degree
    )


def mask_sign(site_id: str, peer_id: str) -> int:
    """``+1`` if ``site_id`` sorts before ``peer_id`` (it adds the pair's mask), else ``-1``."""
    if site_id == peer_id:
        raise MaskingError(f"site {site_id!r} cannot share a mask with itself")
    return 1 if site_id < peer_id else -1


def uniform_mod(stream_key: bytes, modulus: int, count: int) -> UInt64Array:
    """``count`` values exactly uniform on ``[0, modulus)`` from AES-256-CTR under ``stream_key``.

    Words are cut to ``bit_length(modulus)`` bits and rejected when ``>= modulus``.
    """
    if len(stream_key) != SEED_SIZE:
        raise MaskingError(f"a mask stream key must be {SEED_SIZE} bytes, got {len(stream_key)}")
    if not 2 <= modulus < 2**64:
        raise MaskingError(f"modulus {modulus} is outside 2..2**64-1")
    bound = np.uint64(modulus)
    cut = np.uint64((1 << modulus.bit_length()) - 1)
    words = count + count // 8 + 16
    while True:
        keystream = (
            Cipher(algorithms.AES(stream_key), modes.CTR(bytes(16)))
            .encryptor()
            .update(bytes(8 * words))
        )
        drawn = np.frombuffer(keystream, dtype="<u8") & cut
        kept = drawn[drawn < bound]
        if kept.size >= count:
            return kept[:count].astype(np.uint64)
        words *= 2


def mask_stream_key(seed: bytes, chunk_index: int, prime_index: int, level: MaskLevel) -> bytes:
    """The AES-256 key of the mask stream for one chunk and one prime of ``level``."""
    if len(seed) != SEED_SIZE:
        raise MaskingError(f"a pairwise round seed must be {SEED_SIZE} bytes, got {len(seed)}")
    if not 0 <= chunk_index < 2**64:
        raise MaskingError(f"chunk index {chunk_index} is out of range")
    return hkdf_sha256(
        seed,
        salt=MASK_LABEL,
        info=encode_info(
            chunk_index.to_bytes(8, "big"),
            prime_index.to_bytes(4, "big"),
            level.primes[prime_index].to_bytes(8, "big"),
            level.degree.to_bytes(4, "big"),
        ),
    )


def derive_mask(seed: bytes, chunk_index: int, level: MaskLevel) -> UInt64Array:
    """The pair mask for chunk ``chunk_index``: shape ``(primes, N)``, row ``i`` mod ``q_i``."""
    mask: UInt64Array = _derive_masks([seed], chunk_index, level)[0]
    return mask


def _derive_masks(seeds: Sequence[bytes], chunk_index: int, level: MaskLevel) -> UInt64Array:
    """``derive_mask`` for every seed at once: shape ``(seeds, primes, N)``.

    Same values as :func:`uniform_mod` row by row, in fewer numpy passes: AES-CTR
    writes each row's first ``N`` keystream words straight into one array, one
    ``bitwise_and`` cuts them all, and one comparison checks that none was rejected.
    SEAL's primes sit just below a power of two (a default 60-bit prime rejects a word
    with probability about ``2**-46``), so this almost always holds, and then those
    ``N`` words *are* the ``N`` values rejection sampling keeps (the keystream is
    prefix-consistent). A row with a rejected word is redrawn by :func:`uniform_mod`.
    """
    primes, degree = level.shape
    moduli = _moduli_column(level)
    cuts = np.array([(1 << q.bit_length()) - 1 for q in level.primes], dtype="<u8")
    zeros = bytes(8 * degree)
    keys = [
        [mask_stream_key(seed, chunk_index, index, level) for index in range(primes)]
        for seed in seeds
    ]
    words = np.empty((len(seeds), primes, degree), dtype="<u8")
    for row, row_keys in enumerate(keys):
        for index, key in enumerate(row_keys):
            encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
            encryptor.update_into(zeros, memoryview(words[row, index]).cast("B"))
    np.bitwise_and(words, cuts.reshape(-1, 1), out=words)
    complete = np.all(words < moduli, axis=2)
    if not bool(complete.all()):
        for row, index in zip(*np.nonzero(~complete), strict=True):
            words[row, index] = uniform_mod(keys[row][index], level.primes[index], degree)
    return words.astype(np.uint64, copy=False)


def _moduli_column(level: MaskLevel) -> UInt64Array:
    return np.array(level.primes, dtype=np.uint64).reshape(-1, 1)


def add_mod(a: UInt64Array, b: UInt64Array, moduli: UInt64Array) -> UInt64Array:
    """``(a + b) mod q`` for reduced operands, without 64-bit overflow."""
    gap = moduli - b
    return np.where(a >= gap, a - gap, a + b)


def neg_mod(a: UInt64Array, moduli: UInt64Array) -> UInt64Array:
    """``-a mod q`` for reduced ``a``."""
    return np.where(a == 0, a, moduli - a)


def signed_mask_sum(
    terms: Sequence[tuple[int, bytes]], chunk_index: int, level: MaskLevel
) -> UInt64Array:
    """``sum of sign * derive_mask(seed, chunk_index)`` modulo each prime, for ``(sign, seed)``.

    All masks of the chunk are derived together, positive terms first; each negative
    one is replaced by ``q - m`` (in ``(0, q]``, so still congruent to ``-m``). Rows are
    then summed without reduction in batches small enough that the uint64 sum cannot
    overflow (every term is at most ``q``) and each batch is reduced once; with the
    default 60-bit primes a batch holds 16 terms, so a round of up to 17 sites takes a
    single sum and a single reduction per chunk.
    """
    if any(sign not in (1, -1) for sign, _ in terms):
        raise MaskingError("mask signs must be +1 or -1")
    moduli = _moduli_column(level)
    batch = max(1, min(16, (2**64 - 1) // max(level.primes)))
    positive = [seed for sign, seed in terms if sign == 1]
    negative = [seed for sign, seed in terms if sign == -1]
    masks = _derive_masks(positive + negative, chunk_index, level)
    np.subtract(moduli, masks[len(positive) :], out=masks[len(positive) :])
    total = np.zeros(level.shape, dtype=np.uint64)
    for start in range(0, len(masks), batch):
        partial = masks[start : start + batch].sum(axis=0) % moduli
        total = partial if start == 0 else add_mod(total, partial, moduli)
    return total


def site_mask(
    site_id: str, seeds: SiteMaskSeeds, chunk_index: int, level: MaskLevel
) -> UInt64Array:
    """The total mask one site adds to chunk ``chunk_index``: its self mask plus
    ``sum of sign * m_peer``."""
    if not seeds.pair_seeds:
        raise MaskingError(f"site {site_id!r} has no peers to mask with")
    terms = [(mask_sign(site_id, peer), seed) for peer, seed in sorted(seeds.pair_seeds.items())]
    return signed_mask_sum([(1, seeds.self_seed), *terms], chunk_index, level)


def unmasking_offset(revealed: RevealedMasks, chunk_index: int, level: MaskLevel) -> UInt64Array:
    """What the masks leave in chunk ``chunk_index`` of the accepted sites' sum.

    Each accepted site's self mask, and for each ``(survivor, dropped)`` pair the
    survivor's ``mask_sign(survivor, dropped) * m``, which nothing cancels.
    """
    terms = [(1, seed) for _, seed in sorted(revealed.self_seeds.items())]
    terms += [
        (mask_sign(survivor, dropped), seed)
        for (survivor, dropped), seed in sorted(revealed.pair_seeds.items())
    ]
    return signed_mask_sum(terms, chunk_index, level)


# --- writing a transparent (offset, 0) ciphertext and adding it ---------------------
@functools.lru_cache(maxsize=8)
def _mask_proto_parts(level: MaskLevel, scale: float, value_count: int) -> tuple[bytes, bytes]:
    """The mask's TenSEAL ``CKKSVectorProto`` around ``offset``'s coefficients.

    SEAL's uncompressed serialisation of the NTT-form ciphertext ``(offset, 0)``
    (:func:`~tensorguard.federation._seal_format.ciphertext_head`) inside the proto's
    ``sizes``, ``ciphertexts`` and ``scale`` fields. Everything but ``offset`` depends
    only on the level, scale and value count, so it is built once and reused for every
    chunk. Returned as the bytes before ``offset`` and those after it (``c1``, all zero,
    and the proto's scale).
    """
    shape = CiphertextShape(level.parms_id, level.primes, level.degree, scale)
    head = ciphertext_head(shape, scale)
    polynomial = bytes(8 * level.shape[0] * level.shape[1])
    proto_head, _, proto_tail = ckks_vector_proto_parts(
        value_count, len(head) + 2 * len(polynomial), scale, head
    )
    return bytes(proto_head) + head, polynomial + bytes(proto_tail)


def _mask_proto(offset: UInt64Array, level: MaskLevel, scale: float, value_count: int) -> bytes:
    """The serialised ``CKKSVector`` holding the one ciphertext ``(offset, 0)``."""
    head, tail = _mask_proto_parts(level, scale, value_count)
    return b"".join([head, np.ascontiguousarray(offset, dtype="<u8").tobytes(), tail])


def add_to_c0(chunk: ts.CKKSVector, offset: UInt64Array, level: MaskLevel) -> ts.CKKSVector:
    """A new chunk whose ``c0`` is ``c0 + offset`` modulo each prime (``chunk`` is unchanged).

    ``chunk`` must hold one size-2 NTT-form ciphertext at ``level``; ``offset`` has
    shape ``level.shape`` with row ``i`` reduced modulo ``q_i``.
    """
    if offset.shape != level.shape or offset.dtype != np.uint64:
        raise MaskingError(f"offset must be uint64 of shape {level.shape}, got {offset.shape}")
    if bool(np.any(offset >= _moduli_column(level))):
        raise MaskingError("offset coefficients must be reduced modulo their primes")
    ciphertext = sole_ciphertext(chunk, "the chunk to mask")
    if (
        tuple(ciphertext.parms_id()) != level.parms_id
        or ciphertext.size() != CIPHERTEXT_SIZE
        or not ciphertext.is_ntt_form()
        or ciphertext.poly_modulus_degree() != level.degree
    ):
        raise CiphertextError(
            "the chunk is not a size-2 NTT-form ciphertext at the federation's data level"
        )
    scale = float(ciphertext.scale)
    if not math.isfinite(scale) or scale <= 0:
        raise CiphertextError("the chunk's scale is not a positive finite number")
    proto = _mask_proto(offset, level, scale, chunk.size())
    try:
        addend = ts.ckks_vector_from(chunk.context(), proto)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise MaskingError(
            "SEAL refused the mask ciphertext this module wrote; this TenSEAL build "
            f"serialises ciphertexts differently than SEAL 4 ({type(exc).__name__}: {exc})"
        ) from exc
    try:
        result: ts.CKKSVector = chunk + addend
    except (ValueError, RuntimeError, TypeError) as exc:
        raise MaskingError(f"SEAL could not add the mask to the chunk: {exc}") from exc
    return result


def mask_encrypted_vector(
    vector: EncryptedVector,
    site_id: str,
    seeds: SiteMaskSeeds,
    level: MaskLevel,
) -> EncryptedVector:
    """Mask every chunk of a site's encrypted update with its round's mask seeds.

    ``seeds`` holds the seed this site shares with every enrolled peer for this round
    and its own self seed; chunk ``j`` gets :func:`site_mask` for index ``j``. Chunks
    are masked one after another: TenSEAL's encryption and ``cryptography``'s AES hold
    the GIL, so neither overlapping masking with encryption nor a thread pool of two
    made it faster.
    """
    chunks = tuple(
        add_to_c0(chunk, site_mask(site_id, seeds, index, level), level)
        for index, chunk in enumerate(vector.chunks)
    )
    return EncryptedVector(chunks, vector.length, vector.packing)


def unmask_aggregate(
    aggregate: EncryptedVector, revealed: RevealedMasks, level: MaskLevel
) -> EncryptedVector:
    """Remove the accepted sites' self masks and the dropped sites' uncancelled pairwise
    masks from an aggregate.

    ``revealed`` comes from :func:`tensorguard.federation._pairwise.collect_revealed_seeds`,
    which checks that every accepted site revealed its self seed and its seed with every
    dropped peer. Returns the exact sum of the accepted sites' updates.
    """
    if not revealed.self_seeds:
        raise MaskingError("no self seeds revealed: the masked sum cannot be unmasked")
    moduli = _moduli_column(level)
    chunks = tuple(
        add_to_c0(chunk, neg_mod(unmasking_offset(revealed, index, level), moduli), level)
        for index, chunk in enumerate(aggregate.chunks)
    )
    return EncryptedVector(chunks, aggregate.length, aggregate.packing)
