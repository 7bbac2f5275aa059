"""The grid is sized from the worst CKKS slot, not the average one (#15).

CKKS decryption noise is not uniform across slots: slot ``j`` carries ``r(ζ_j) · s(ζ_j)``
and ``s(ζ_j)`` is fixed by the secret key, so some slots are several times noisier than
the mean for every encryption under that key. These tests decrypt real encryptions under
the session's federation key and check the chosen grid against what they measure.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from tensorguard.federation._fixed_point import (
    MAX_ROUND_VALUES,
    OFF_GRID_FRACTION,
    ROUND_FAILURE_BOUND,
    WORST_SLOT_SAFETY,
    check_on_grid,
    ckks_noise_std,
    grid_bits_for,
    quantise,
)
from tensorguard.federation._packing import Packing, decrypt_vector, encrypt_vector
from tensorguard.federation._params import FederationParams
from tests.federation.conftest import Federation

ENCRYPTIONS = 64
"""Single encryptions of one full ciphertext measured per test session (~1 s)."""
OLD_GRID_BITS = 27
"""What the mean-error rule (half a step = 16 σ of a 64-site sum) chose for the defaults."""


@pytest.fixture(scope="module")
def slot_errors(fed: Federation) -> np.ndarray:
    """Decryption errors of ``ENCRYPTIONS`` fresh complex-packed encryptions of one full
    ciphertext (N values, two per slot), shape ``(ENCRYPTIONS, N)``."""
    params = fed.public.params
    context = fed.public.load_context()
    values = np.random.default_rng(15).uniform(-1.0, 1.0, params.poly_modulus_degree)
    errors = [
        decrypt_vector(encrypt_vector(values, context, params, Packing.COMPLEX), fed.secret.context)
        - values
        for _ in range(ENCRYPTIONS)
    ]
    return np.stack(errors)


def _slot_std(errors: np.ndarray) -> np.ndarray:
    """Each value position's standard deviation, pooling the real and the imaginary part
    of a slot (both carry ``s(ζ_j)``): one entry per value, pairs equal."""
    per_slot = np.sqrt(np.mean(errors.reshape(errors.shape[0], -1, 2) ** 2, axis=(0, 2)))
    return np.repeat(per_slot, 2)


def _refusal_probability(slot_std: np.ndarray, params: FederationParams, bits: int) -> float:
    """Under this key: the chance that a ``max_sites`` sum of ``MAX_ROUND_VALUES`` values
    has any value past the quarter-step margin, each value Gaussian with its slot's
    measured standard deviation (scaled by √max_sites), union bound over the round."""
    margin = OFF_GRID_FRACTION * math.ldexp(1.0, -bits)
    scaled = slot_std * math.sqrt(params.max_sites)
    tails = np.array([math.erfc(margin / (s * math.sqrt(2.0))) for s in scaled])
    return float(MAX_ROUND_VALUES / slot_std.size * np.sum(tails))


def test_decryption_noise_is_not_uniform_across_slots(slot_errors: np.ndarray) -> None:
    """The premise of the worst-slot rule: the slot pattern belongs to the key (two halves
    of the encryptions agree), the spread is wide, and the pooled error is heavy-tailed
    (Laplace-like, kurtosis ~6, not a Gaussian's 3)."""
    first, second = _slot_std(slot_errors[::2]), _slot_std(slot_errors[1::2])
    assert np.corrcoef(first, second)[0, 1] > 0.9
    spread = _slot_std(slot_errors) / np.mean(_slot_std(slot_errors))
    assert spread.max() > 2.0
    assert spread.min() < 0.2
    pooled = slot_errors.ravel() / np.sqrt(np.mean(slot_errors**2))
    assert float(np.mean(pooled**4)) > 4.5


def test_measured_tail_stays_within_the_models_bound(
    fed: Federation, slot_errors: np.ndarray
) -> None:
    """The grid rule's tail model, a Laplace law with the error scale times the safety
    factor, bounds the measured fraction of values beyond t·σ₁ for every t measured; a
    Gaussian with the mean σ₁ (the old rule's assumption) would not."""
    sigma = ckks_noise_std(fed.public.params, 1)
    magnitudes = np.abs(slot_errors.ravel()) / sigma
    for t in (2.0, 4.0, 6.0, 8.0, 10.0):
        measured = float(np.mean(magnitudes > t))
        assert measured <= math.exp(-math.sqrt(2.0) * t / WORST_SLOT_SAFETY), (t, measured)
    assert float(np.mean(magnitudes > 5.0)) > 100 * math.erfc(5.0 / math.sqrt(2.0))


def test_the_chosen_grid_covers_the_measured_worst_slot(
    fed: Federation, slot_errors: np.ndarray
) -> None:
    """Extrapolated from each slot's measured noise to a full round (64 sites, 2^27
    values), an honest sum is refused with probability below the bound at the chosen
    grid; at the grid the mean-error rule chose it would be refused almost surely."""
    params = fed.public.params
    slot_std = _slot_std(slot_errors)
    bits = grid_bits_for(params)
    assert _refusal_probability(slot_std, params, bits) < ROUND_FAILURE_BOUND
    assert _refusal_probability(slot_std, params, OLD_GRID_BITS) > 1e-2
    # The worst measured slot, 64 sites' worth, is far inside the quarter-step margin.
    worst = float(slot_std.max()) * math.sqrt(params.max_sites)
    assert OFF_GRID_FRACTION * math.ldexp(1.0, -bits) > 6 * WORST_SLOT_SAFETY * worst


def test_every_value_of_real_aggregates_lands_within_the_refusal_margin(
    fed: Federation,
) -> None:
    """Sums of 8 sites' on-grid updates, freshly encrypted four times: every value is
    recovered exactly, and even scaled to 64 sites' noise (x√8) the farthest value stays
    inside the quarter-step margin."""
    params = fed.public.params
    context = fed.public.load_context()
    bits = grid_bits_for(params)
    rng = np.random.default_rng(16)
    bound = 0.9 * params.site_value_bound / math.sqrt(2.0)
    updates = [
        quantise(rng.uniform(-bound, bound, params.poly_modulus_degree), bits) for _ in range(8)
    ]
    exact = np.sum(updates, axis=0)
    scale_to_full = math.sqrt(params.max_sites / len(updates))
    for _ in range(4):
        encrypted = [encrypt_vector(u, context, params, Packing.COMPLEX) for u in updates]
        total = encrypted[0]
        for part in encrypted[1:]:
            total = total + part
        decrypted = decrypt_vector(total, fed.secret.context)
        assert np.array_equal(check_on_grid(decrypted, bits), exact)
        worst_steps = float(np.max(np.abs(decrypted - exact))) * math.ldexp(1.0, bits)
        assert worst_steps * scale_to_full < OFF_GRID_FRACTION, worst_steps
