"""The RDP accountant against opacus, and the per-site budget ledger."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from opacus.accountants import RDPAccountant

from tensorguard.federation.accountant import (
    DEFAULT_ORDERS,
    gaussian_epsilon,
    sampled_gaussian_rdp,
)
from tensorguard.federation.errors import PrivacyAccountingError, PrivacyBudgetExceededError
from tensorguard.federation.privacy import DPConfig, PrivacyCharge, PrivacyLedger

SETTINGS = [
    (1.1, 0.01, 1000, 1e-5),
    (1.0, 1.0, 10, 1e-5),
    (0.8, 0.05, 300, 1e-6),
    (4.0, 1.0, 50, 1e-5),
    (1.0, 0.001, 10000, 1e-5),
    (2.5, 0.2, 40, 1e-3),
]


def _opacus_epsilon(sigma: float, q: float, steps: int, delta: float, **kwargs: object) -> float:
    accountant = RDPAccountant()
    accountant.history = [(sigma, q, steps)]
    return float(accountant.get_epsilon(delta, **kwargs))


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), SETTINGS)
def test_epsilon_matches_opacus_on_the_same_orders(
    sigma: float, q: float, steps: int, delta: float
) -> None:
    ours = gaussian_epsilon(sigma, q, steps, delta)
    theirs = _opacus_epsilon(sigma, q, steps, delta, alphas=list(DEFAULT_ORDERS))
    assert ours == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize(("sigma", "q", "steps", "delta"), SETTINGS)
def test_epsilon_is_close_to_opacus_defaults_and_never_smaller(
    sigma: float, q: float, steps: int, delta: float
) -> None:
    ours = gaussian_epsilon(sigma, q, steps, delta)
    theirs = _opacus_epsilon(sigma, q, steps, delta)
    assert theirs <= ours * (1 + 1e-12)
    assert ours <= theirs * 1.05


def test_full_participation_is_the_gaussian_mechanism() -> None:
    rdp = sampled_gaussian_rdp(2.0, 1.0, 3, orders=(2, 8))
    assert rdp == pytest.approx((3 * 2 / 8, 3 * 8 / 8))


def test_invalid_parameters_are_refused() -> None:
    with pytest.raises(PrivacyAccountingError):
        gaussian_epsilon(0.0, 0.5, 1, 1e-5)
    with pytest.raises(PrivacyAccountingError):
        gaussian_epsilon(1.0, 1.5, 1, 1e-5)
    with pytest.raises(PrivacyAccountingError):
        gaussian_epsilon(1.0, 0.5, 1, 1.0)


def test_ledger_composes_rounds_and_refuses_past_the_budget() -> None:
    config = DPConfig(noise_multiplier=4.0, delta=1e-5, epsilon_budget=3.0)
    ledger = PrivacyLedger.for_site("site-00", config)
    reports = []
    for index in range(20):
        charge = PrivacyCharge(f"round-{index}", 4.0, 1.0, 1)
        try:
            reports.append(ledger.charge(charge))
        except PrivacyBudgetExceededError as exc:
            assert "above the budget" in str(exc)
            break
    else:
        pytest.fail("the budget was never exhausted")
    rounds = len(reports)
    assert 1 <= rounds < 20
    assert len(ledger.charges) == rounds
    assert reports[-1].epsilon_total <= 3.0
    assert gaussian_epsilon(4.0, 1.0, rounds + 1, 1e-5) > 3.0
    assert reports[-1].epsilon_total == pytest.approx(gaussian_epsilon(4.0, 1.0, rounds, 1e-5))
    assert reports[0].epsilon_round == pytest.approx(gaussian_epsilon(4.0, 1.0, 1, 1e-5))
    assert all(later.epsilon_total > earlier.epsilon_total for earlier, later in pairwise(reports))


def test_ledger_round_trip_and_double_charge() -> None:
    ledger = PrivacyLedger("site-01", 1e-5, 10.0)
    ledger.charge(PrivacyCharge("r1", 1.5, 1.0, 1))
    restored = PrivacyLedger.from_json(ledger.to_json())
    assert restored == ledger
    assert math.isclose(restored.epsilon(), ledger.epsilon())
    with pytest.raises(PrivacyAccountingError, match="already released"):
        restored.charge(PrivacyCharge("r1", 1.5, 1.0, 1))
    with pytest.raises(PrivacyAccountingError):
        PrivacyLedger.from_json('{"format": "other"}')
