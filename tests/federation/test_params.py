"""CKKS parameters: HE Standard security limits and encoding headroom."""

from __future__ import annotations

import pytest

from tensorguard.federation._errors import FederationParamsError
from tensorguard.federation._params import HE_STANDARD_MAX_MODULUS_BITS, FederationParams


def test_default_parameters_reach_256_bit_security_with_one_data_prime() -> None:
    params = FederationParams()
    assert params.total_modulus_bits == sum(params.coeff_mod_bit_sizes) == 118
    assert params.total_modulus_bits <= HE_STANDARD_MAX_MODULUS_BITS[8192][256]
    assert params.security_level == 256
    assert params.data_modulus_bits == params.coeff_mod_bit_sizes[0]
    assert params.slot_count == params.poly_modulus_degree // 2


def test_modulus_above_the_standard_limit_is_refused() -> None:
    with pytest.raises(FederationParamsError, match="HE Standard"):
        FederationParams(poly_modulus_degree=4096, coeff_mod_bit_sizes=(60, 60))
    with pytest.raises(FederationParamsError, match="HE Standard"):
        FederationParams(coeff_mod_bit_sizes=(60, 60), min_security_level=256)


def test_one_prime_or_no_headroom_is_refused() -> None:
    with pytest.raises(FederationParamsError, match="two primes"):
        FederationParams(coeff_mod_bit_sizes=(60,))
    with pytest.raises(FederationParamsError, match="headroom"):
        FederationParams(scale_bits=58)


def test_site_bound_shrinks_with_more_sites() -> None:
    few = FederationParams(max_sites=4)
    many = FederationParams(max_sites=64)
    assert few.site_value_bound == 16 * many.site_value_bound
    assert few.aggregate_value_bound * few.scale < 2 ** (few.data_modulus_bits - 2)
