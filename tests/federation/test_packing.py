"""CKKS packing: slot usage, expansion, bounds and strict parsing."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from tensorguard.federation._context import (
    PublicFederation,
    SecretFederation,
    create_federation_context,
)
from tensorguard.federation._errors import CiphertextError, ContextError, EncodingCapacityError
from tensorguard.federation._packing import (
    EncryptedVector,
    Packing,
    chunk_lengths,
    decrypt_vector,
    encrypt_vector,
    load_encrypted_vector,
    sole_ciphertext,
)
from tensorguard.federation._params import FederationParams

FLARE_DEFAULT_EXPANSION = 14.4
ROUND_TRIP_TOLERANCE = 1e-9
"""Absolute error allowed per value: about 50 standard deviations of one encryption's
CKKS error (1.9e-11 with the default parameters)."""


@pytest.mark.parametrize(("packing", "expansion"), [(Packing.REAL, 8.01), (Packing.COMPLEX, 4.005)])
def test_round_trip_uses_every_slot(
    public: PublicFederation, secret: SecretFederation, packing: Packing, expansion: float
) -> None:
    params = public.params
    per_ciphertext = packing.values_per_ciphertext(params)
    values = np.random.default_rng(1).normal(0, 1e-2, 3 * per_ciphertext + 17)
    encrypted = encrypt_vector(values, public.load_context(), params, packing)
    assert encrypted.ciphertext_count == 4
    data = encrypted.to_bytes()
    loaded = load_encrypted_vector(data, secret.context, params, values.size, packing=packing)
    decrypted = decrypt_vector(loaded, secret.context)
    assert np.linalg.norm(decrypted - values) / np.linalg.norm(values) < 1e-7
    full_expansion = len(data) / (4 * per_ciphertext * encrypted.ciphertext_count)
    assert full_expansion < min(expansion, FLARE_DEFAULT_EXPANSION / 1.6)


def test_complex_packing_halves_the_ciphertexts(public: PublicFederation) -> None:
    params, context = public.params, public.load_context()
    values = np.linspace(-1.0, 1.0, 2 * params.poly_modulus_degree)
    real = encrypt_vector(values, context, params, Packing.REAL)
    packed = encrypt_vector(values, context, params, Packing.COMPLEX)
    assert (real.ciphertext_count, packed.ciphertext_count) == (4, 2)
    assert len(packed.to_bytes()) < 0.51 * len(real.to_bytes())
    assert [chunk.size() for chunk in packed.chunks] == [params.slot_count] * 2


def _boundary_lengths(params: FederationParams) -> list[int]:
    n = params.poly_modulus_degree  # values per complex ciphertext
    return [1, 2, 3, n - 1, n, n + 1, 2 * n - 1, 2 * n, 2 * n + 1]


@pytest.mark.parametrize("index", range(9))
def test_complex_round_trip_at_odd_lengths_and_capacity_boundaries(
    public: PublicFederation, secret: SecretFederation, index: int
) -> None:
    """Every value comes back in its place (signs and magnitudes distinct, so a swapped
    real/imaginary part, a lost last slot or a dropped half all show), at lengths around
    the N values one ciphertext holds."""
    params = public.params
    length = _boundary_lengths(params)[index]
    ramp = np.arange(1, length + 1, dtype=np.float64) / length
    values = ramp * np.where(np.arange(length) % 3 == 1, -1.0, 1.0)  # negatives too
    encrypted = encrypt_vector(values, public.load_context(), params, Packing.COMPLEX)
    assert encrypted.ciphertext_count == -(-length // params.poly_modulus_degree)
    assert (
        encrypted.chunks[-1].size() == (chunk_lengths(length, 2 * params.slot_count)[-1] + 1) // 2
    )
    loaded = load_encrypted_vector(encrypted.to_bytes(), secret.context, params, length)
    decrypted = decrypt_vector(loaded, secret.context)
    assert decrypted.shape == values.shape
    assert np.max(np.abs(decrypted - values)) < ROUND_TRIP_TOLERANCE
    assert abs(decrypted[-1] - values[-1]) < ROUND_TRIP_TOLERANCE  # the last slot's value


def test_a_payload_in_another_packing_is_refused_by_name(public: PublicFederation) -> None:
    context, params = public.load_context(), public.params
    for written, expected in ((Packing.REAL, Packing.COMPLEX), (Packing.COMPLEX, Packing.REAL)):
        data = encrypt_vector(np.ones(100), context, params, written).to_bytes()
        assert data[4] == written.wire_version
        with pytest.raises(CiphertextError, match=rf"is {written}-packed .* says {expected}"):
            load_encrypted_vector(data, context, params, 100, packing=expected)
    real = encrypt_vector(np.ones(100), context, params, Packing.REAL)
    with pytest.raises(CiphertextError, match="cannot add a complex-packed"):
        _ = encrypt_vector(np.ones(100), context, params) + real


def test_complex_slots_are_bounded_by_their_modulus(public: PublicFederation) -> None:
    """A slot carries two values; its modulus sqrt(x² + y²) is what the ciphertext
    modulus must hold, and a vector clipped to the bound never exceeds it."""
    params, context = public.params, public.load_context()
    bound = params.site_value_bound
    pair = np.array([0.8 * bound, -0.8 * bound])  # each below, together above
    encrypt_vector(pair, context, params, Packing.REAL)
    with pytest.raises(EncodingCapacityError, match=r"slot .* of magnitude"):
        encrypt_vector(pair, context, params, Packing.COMPLEX)
    clipped = pair / np.linalg.norm(pair) * (0.999 * bound)
    encrypt_vector(clipped, context, params, Packing.COMPLEX)


def test_a_chunk_of_two_ciphertexts_is_refused(public: PublicFederation) -> None:
    context = public.load_context()
    single = ts.ckks_vector(context, [0.5] * public.params.slot_count)
    assert sole_ciphertext(single, "chunk 0") is not None
    double = ts.ckks_vector(context, [0.5] * (public.params.slot_count + 1))
    with pytest.raises(CiphertextError, match="chunk 1 holds 2 ciphertexts"):
        sole_ciphertext(double, "chunk 1")


def test_chunk_lengths() -> None:
    assert chunk_lengths(10, 4) == [4, 4, 2]
    assert chunk_lengths(8, 4) == [4, 4]
    with pytest.raises(CiphertextError):
        chunk_lengths(0, 4)


def test_values_above_the_site_bound_are_refused(public: PublicFederation) -> None:
    values = np.zeros(10)
    values[3] = public.params.site_value_bound * 1.01
    with pytest.raises(EncodingCapacityError, match="per-site CKKS bound"):
        encrypt_vector(values, public.load_context(), public.params)
    values[3] = np.nan
    with pytest.raises(EncodingCapacityError, match="NaN"):
        encrypt_vector(values, public.load_context(), public.params)


def test_public_context_refuses_decryption(public: PublicFederation) -> None:
    context = public.load_context()
    encrypted = encrypt_vector(np.ones(5), context, public.params)
    with pytest.raises(ContextError):
        decrypt_vector(encrypted, context)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d[:-1],
        lambda d: d + b"\0",
        lambda d: b"XXXX" + d[4:],
        lambda d: d[:40] + bytes([d[40] ^ 0xFF]) + d[41:],
    ],
    ids=["truncated", "trailing", "magic", "corrupt-chunk"],
)
def test_malformed_payloads_are_refused(public: PublicFederation, mutate: object) -> None:
    context = public.load_context()
    data = encrypt_vector(np.ones(100), context, public.params).to_bytes()
    with pytest.raises(CiphertextError):
        load_encrypted_vector(mutate(data), context, public.params, 100)  # type: ignore[operator]


def test_wrong_length_is_refused(public: PublicFederation) -> None:
    context = public.load_context()
    data = encrypt_vector(np.ones(100), context, public.params).to_bytes()
    with pytest.raises(CiphertextError, match="holds 100 values"):
        load_encrypted_vector(data, context, public.params, 101)


def test_ciphertexts_at_another_scale_or_ring_are_refused(public: PublicFederation) -> None:
    context = public.load_context()
    scaled = ts.ckks_vector(context, [1.0] * 8, scale=2.0**40)
    other = create_federation_context(
        FederationParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 40), scale_bits=30)
    )
    foreign = ts.ckks_vector(other.public.load_context(), [1.0] * 8)
    for vector in (scaled, foreign):
        blob = vector.serialize()
        framed = (
            b"TGCV"
            + bytes([1])
            + (8).to_bytes(8, "big")
            + (1).to_bytes(4, "big")
            + len(blob).to_bytes(4, "big")
            + blob
        )
        with pytest.raises(CiphertextError):
            load_encrypted_vector(framed, context, public.params, 8, packing=Packing.REAL)


def test_a_refused_in_place_addition_leaves_the_running_sum_unchanged(
    public: PublicFederation, secret: SecretFederation
) -> None:
    """The aggregator adds updates into its running sum in place; an update whose second
    ciphertext SEAL refuses (another scale) must not leave its first one in the sum."""
    params, context = public.params, public.load_context()
    length = 2 * params.poly_modulus_degree + 5  # three chunks
    rng = np.random.default_rng(3)
    first, second = rng.uniform(-1, 1, length), rng.uniform(-1, 1, length)
    total = encrypt_vector(first, context, params)
    addend = encrypt_vector(second, context, params)
    rescaled = ts.ckks_vector(context, [0.5] * addend.chunks[1].size(), scale=2.0**40)
    broken = EncryptedVector(
        (addend.chunks[0], rescaled, addend.chunks[2]), length, Packing.COMPLEX
    )
    with pytest.raises(CiphertextError, match="homomorphic addition failed"):
        total.add_in_place(broken)
    unchanged = decrypt_vector(total, secret.context)
    assert np.max(np.abs(unchanged - first)) < ROUND_TRIP_TOLERANCE
    total.add_in_place(addend)
    summed = decrypt_vector(total, secret.context)
    assert np.max(np.abs(summed - (first + second))) < ROUND_TRIP_TOLERANCE
