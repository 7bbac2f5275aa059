"""The coefficient-wise sum at its edges (#18 item 6).

The mutation run on ``federation/_ciphertext_sum.py`` found these unchecked: the
uint64 headroom (coefficients at ``q - 1`` in every slot, added past the point where
the unreduced total would wrap), the per-prime coefficient check on a level of two
primes of different sizes (the federation's default level has one), the refusals'
wording, and the TenSEAL fallback under real packing.
"""

from __future__ import annotations

import numpy as np
import pytest

from tensorguard.federation._ciphertext_sum import CiphertextSum
from tensorguard.federation._context import (
    PublicFederation,
    SecretFederation,
    create_federation_context,
    load_secret_context,
)
from tensorguard.federation._errors import CiphertextError
from tensorguard.federation._masking import mask_level
from tensorguard.federation._packing import (
    Packing,
    chunk_sizes,
    decrypt_vector,
    encrypt_vector,
    load_encrypted_vector,
)
from tensorguard.federation._params import FederationParams
from tensorguard.federation._seal_format import CiphertextShape, protobuf_varint, read_chunk
from tests.federation.test_ciphertext_sum import _chunk_starts, _replace, _seal_start


def _coefficients(payload: bytes, shape: CiphertextShape, chunks: int) -> np.ndarray:
    """Every chunk's coefficients, read back from a TGCV payload."""
    out = np.zeros((chunks, *shape.coefficient_shape), dtype="<u8")
    for index, start in enumerate(_chunk_starts(payload)):
        length = int.from_bytes(payload[start - 4 : start], "big")
        view = memoryview(payload)[start : start + length]
        assert read_chunk(view, shape, "chunk", out[index].data.cast("B")) is not None
    return out


def _shape(public: PublicFederation) -> CiphertextShape:
    level = mask_level(public.load_context(), public.params)
    return CiphertextShape(level.parms_id, level.primes, level.degree, public.params.scale)


def test_coefficients_at_their_largest_sum_exactly_past_the_headroom(
    public: PublicFederation,
) -> None:
    """Every coefficient ``q - 1`` (valid: below its prime, ``c1`` not zero): 40 updates
    need two reductions; a late one would wrap the uint64 total."""
    params, context = public.params, public.load_context()
    shape = _shape(public)
    (q,) = shape.primes
    length = 7
    base = CiphertextSum(context, params, length, Packing.COMPLEX)
    base.add(encrypt_vector(np.ones(length), context, params).to_bytes())
    template = base.to_bytes()
    seal = _seal_start(template, 0)
    array = seal + 16 + 32 + 41 + 16 + 8
    extreme = _replace(template, array, np.full(shape.coefficient_shape, q - 1, "<u8").tobytes())
    total = CiphertextSum(context, params, length, Packing.COMPLEX)
    for _ in range(40):
        total.add(extreme)
    summed = _coefficients(total.to_bytes(), shape, 1)
    assert summed.dtype == np.dtype("<u8")
    assert bool(np.all(summed == (40 * (q - 1)) % q))


@pytest.fixture(scope="module")
def two_primes() -> tuple[PublicFederation, SecretFederation]:
    """A federation whose data level has two primes, 2^60-ish and 2^40-ish."""
    keys = create_federation_context(FederationParams(coeff_mod_bit_sizes=(60, 40, 60)))
    return keys.public, load_secret_context(keys.secret_context_bytes, keys.public)


def test_each_coefficient_is_checked_against_its_own_prime(
    two_primes: tuple[PublicFederation, SecretFederation],
) -> None:
    public, _ = two_primes
    params, context = public.params, public.load_context()
    shape = _shape(public)
    large, small = shape.primes
    assert large > small
    length = Packing.COMPLEX.values_per_ciphertext(params) + 3  # two chunks
    assert len(chunk_sizes(length, params, Packing.COMPLEX)) == 2
    # TenSEAL's chunks of a 40-bit prime really compress, so they take the TenSEAL path;
    # the coefficient check sees uncompressed chunks (as the aggregator writes them):
    # residues drawn below each prime, as a ciphertext's are
    rng = np.random.default_rng(3)
    residues = np.stack(
        [
            rng.integers(0, q, size=(2, 2, params.poly_modulus_degree), dtype=np.uint64)
            for q in shape.primes
        ],
        axis=2,
    ).astype("<u8")
    total = CiphertextSum(context, params, length, Packing.COMPLEX)
    valid = total._write(residues)
    total.add(valid)  # prime 0's residues exceed prime 1: still valid
    assert residues[:, :, 0].max() >= small
    assert np.array_equal(_coefficients(total.to_bytes(), shape, 2), residues)
    bad_residues = residues.copy()
    bad_residues[1, 1, 1, 0] = small  # chunk 1, c1, prime 1, coefficient 0
    bad = total._write(bad_residues)
    with pytest.raises(CiphertextError) as raised:
        total.add(bad)
    assert str(raised.value) == ("ciphertext chunk 1 has a coefficient that is not below its prime")
    assert total.count == 1
    total.add(valid)
    total.add(valid)  # reduced per prime when written
    moduli = np.array(shape.primes, dtype=np.uint64).reshape(1, 1, -1, 1)
    expected = (residues.astype(object) * 3 % moduli.astype(object)).astype(np.uint64)
    assert np.array_equal(_coefficients(total.to_bytes(), shape, 2), expected)


def test_the_refusals_are_worded_exactly(public: PublicFederation) -> None:
    params, context = public.params, public.load_context()
    total = CiphertextSum(context, params, 5, Packing.COMPLEX)
    with pytest.raises(CiphertextError) as raised:
        total.to_bytes()
    assert str(raised.value) == "no encrypted update was added to the sum"


def test_the_tenseal_fallback_keeps_real_packing(
    public: PublicFederation, secret: SecretFederation
) -> None:
    """A chunk only TenSEAL reads, under real packing: the sum is real-packed too."""
    params, context = public.params, public.load_context()
    length = Packing.REAL.values_per_ciphertext(params) + 9  # two real-packed chunks
    values = [np.random.default_rng(seed).uniform(-0.5, 0.5, length) for seed in (1, 2)]
    payloads = [encrypt_vector(v, context, params, Packing.REAL).to_bytes() for v in values]
    start = _chunk_starts(payloads[1])[0]
    size = int.from_bytes(payloads[1][start - 4 : start], "big")
    proto = payloads[1][start : start + size]
    payloads[1] = payloads[1][:start] + proto[-9:] + proto[:-9] + payloads[1][start + size :]
    total = CiphertextSum(context, params, length, Packing.REAL)
    for payload in payloads:
        total.add(payload)
    result = total.to_bytes()
    loaded = load_encrypted_vector(result, secret.context, params, length, packing=Packing.REAL)
    assert np.max(np.abs(decrypt_vector(loaded, secret.context) - sum(values))) < 1e-6


def test_the_payload_framing_refusals_are_worded_exactly(public: PublicFederation) -> None:
    params, context = public.params, public.load_context()
    length = Packing.COMPLEX.values_per_ciphertext(params) + 3  # two chunks
    payload = encrypt_vector(np.ones(length), context, params).to_bytes()
    other = encrypt_vector(np.ones(length + 1), context, params).to_bytes()
    one_chunk = encrypt_vector(np.ones(3), context, params).to_bytes()
    huge_chunk = payload[:17] + b"\xff\xff\xff\xff" + payload[21:]
    cases = {
        "magic": (b"XXXX" + payload[4:], "not a encrypted payload (bad magic bytes)"),
        "value count": (
            payload[:8],
            "encrypted payload is truncated in its value count (8 bytes needed, 3 left)",
        ),
        "ciphertext count": (
            payload[:15],
            "encrypted payload is truncated in its ciphertext count (4 bytes needed, 2 left)",
        ),
        "length": (
            other,
            f"encrypted payload holds {length + 1} values, the layout has {length}",
        ),
        "count": (
            payload[:5] + length.to_bytes(8, "big") + one_chunk[13:],
            "encrypted payload has 1 ciphertexts, 2 expected",
        ),
        "chunk limit": (
            huge_chunk,
            "encrypted payload ciphertext chunk 0 of 4294967295 bytes exceeds the "
            "67108864-byte limit",
        ),
    }
    for name, (data, message) in cases.items():
        total = CiphertextSum(context, params, length, Packing.COMPLEX)
        with pytest.raises(CiphertextError) as raised:
            total.add(data)
        assert str(raised.value) == message, name


@pytest.mark.parametrize(
    ("packing", "unit"), [(Packing.COMPLEX, "slots"), (Packing.REAL, "values")]
)
def test_a_chunk_holding_another_size_is_refused_in_the_packings_unit(
    public: PublicFederation, packing: Packing, unit: str
) -> None:
    params, context = public.params, public.load_context()
    length = packing.values_per_ciphertext(params) + 3
    per_chunk = chunk_sizes(length, params, packing)[0]  # slots or values in chunk 0
    total = CiphertextSum(context, params, length, packing)
    total.add(encrypt_vector(np.ones(length), context, params, packing).to_bytes())
    written = total.to_bytes()  # uncompressed, read by the fast path
    start = _chunk_starts(written)[0]
    size = protobuf_varint(per_chunk)
    assert written[start : start + 2 + len(size)] == b"\x0a" + bytes([len(size)]) + size
    smaller = protobuf_varint(per_chunk - 1)
    assert len(smaller) == len(size)
    bad = _replace(written, start + 2, smaller)
    fresh = CiphertextSum(context, params, length, packing)
    with pytest.raises(CiphertextError) as raised:
        fresh.add(bad)
    assert str(raised.value) == (
        f"ciphertext chunk 0 holds {per_chunk - 1} {unit}, {per_chunk} expected"
    )


def test_several_updates_only_tenseal_reads_are_summed_together(
    public: PublicFederation, secret: SecretFederation
) -> None:
    params, context = public.params, public.load_context()
    length = 40
    values = [np.random.default_rng(seed).uniform(-0.5, 0.5, length) for seed in (4, 5, 6)]
    payloads = []
    for vector in values:
        payload = encrypt_vector(vector, context, params).to_bytes()
        start = _chunk_starts(payload)[0]
        size = int.from_bytes(payload[start - 4 : start], "big")
        proto = payload[start : start + size]
        payloads.append(payload[:start] + proto[-9:] + proto[:-9] + payload[start + size :])
    total = CiphertextSum(context, params, length, Packing.COMPLEX)
    for payload in payloads:
        total.add(payload)
    loaded = load_encrypted_vector(total.to_bytes(), secret.context, params, length)
    assert np.max(np.abs(decrypt_vector(loaded, secret.context) - sum(values))) < 1e-6


def test_an_update_only_tenseal_reads_is_still_inspected(public: PublicFederation) -> None:
    """The TenSEAL path inspects what the fast reader would have: a transparent
    ciphertext (``c1 = 0``) in proto fields TenSEAL does not write is refused."""
    params, context = public.params, public.load_context()
    length = 9
    total = CiphertextSum(context, params, length, Packing.COMPLEX)
    total.add(encrypt_vector(np.ones(length), context, params).to_bytes())
    written = total.to_bytes()
    shape = _shape(public)
    coefficients = _coefficients(written, shape, 1)
    coefficients[0, 1] = 0  # c1 = 0: not encrypted
    transparent = total._write(coefficients)
    start = _chunk_starts(transparent)[0]
    size = int.from_bytes(transparent[start - 4 : start], "big")
    proto = transparent[start : start + size]
    reordered = transparent[:start] + proto[-9:] + proto[:-9] + transparent[start + size :]
    fresh = CiphertextSum(context, params, length, Packing.COMPLEX)
    with pytest.raises(CiphertextError) as raised:
        fresh.add(reordered)
    assert str(raised.value) == "ciphertext chunk 0 is transparent (not encrypted)"
    assert fresh.count == 0
