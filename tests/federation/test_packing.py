"""CKKS packing: slot usage, expansion, bounds and strict parsing."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from tensorguard.federation.context import (
    PublicFederation,
    SecretFederation,
    create_federation_context,
)
from tensorguard.federation.errors import CiphertextError, ContextError, EncodingCapacityError
from tensorguard.federation.packing import (
    chunk_lengths,
    decrypt_vector,
    encrypt_vector,
    load_encrypted_vector,
    sole_ciphertext,
)
from tensorguard.federation.params import FederationParams

FLARE_DEFAULT_EXPANSION = 14.4


def test_round_trip_uses_every_slot(public: PublicFederation, secret: SecretFederation) -> None:
    params = public.params
    values = np.random.default_rng(1).normal(0, 1e-2, 3 * params.slot_count + 17)
    encrypted = encrypt_vector(values, public.load_context(), params)
    assert encrypted.ciphertext_count == 4
    data = encrypted.to_bytes()
    loaded = load_encrypted_vector(data, secret.context, params, values.size)
    decrypted = decrypt_vector(loaded, secret.context)
    assert np.linalg.norm(decrypted - values) / np.linalg.norm(values) < 1e-7
    full_expansion = len(data) / (4 * params.slot_count * encrypted.ciphertext_count)
    assert full_expansion < FLARE_DEFAULT_EXPANSION / 1.6


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
            load_encrypted_vector(framed, context, public.params, 8)
