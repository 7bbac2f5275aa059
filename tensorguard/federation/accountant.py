"""Rényi-DP accounting for the (sub)sampled Gaussian mechanism.

Formulas, all standard:

* RDP of the sampled Gaussian mechanism at integer order ``α`` with sampling rate
  ``q`` and noise multiplier ``σ`` (Mironov, Talwar, Zhang 2019, "Rényi Differential
  Privacy of the Sampled Gaussian Mechanism", §3.3)::

      ε(α) = 1/(α-1) · log Σ_{k=0..α} C(α,k) (1-q)^(α-k) q^k exp((k²-k) / (2σ²))

  which for ``q = 1`` is the plain Gaussian mechanism's ``α / (2σ²)``;
* composition over steps and rounds adds RDP order by order;
* conversion to ``(ε, δ)``-DP (Balle et al. 2020, "Hypothesis testing
  interpretations and Rényi differential privacy", Theorem 21)::

      ε = min_α  ε_RDP(α) + log((α-1)/α) - (log δ + log α) / (α-1)

This is the same accounting opacus's ``RDPAccountant`` performs; the tests compare
the two. Adjacency is add/remove of one record (here: one site's whole update) and the
sensitivity is the clipping norm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tensorguard.federation.errors import PrivacyAccountingError

DEFAULT_ORDERS: tuple[int, ...] = tuple(range(2, 257))
"""Integer Rényi orders searched when converting to (ε, δ)."""


def _log_add(a: float, b: float) -> float:
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _log_a_integer(sampling_rate: float, noise_multiplier: float, order: int) -> float:
    """``log A_α`` for integer ``α`` (the sum above, in log space)."""
    log_a = -math.inf
    log_q = math.log(sampling_rate)
    log_1mq = math.log1p(-sampling_rate) if sampling_rate < 1.0 else -math.inf
    for k in range(order + 1):
        if k < order and log_1mq == -math.inf:
            continue
        log_binomial = math.lgamma(order + 1) - math.lgamma(k + 1) - math.lgamma(order - k + 1)
        term = (
            log_binomial
            + k * log_q
            + (order - k) * (log_1mq if k < order else 0.0)
            + (k * k - k) / (2.0 * noise_multiplier**2)
        )
        log_a = _log_add(log_a, term)
    return log_a


def _validate(noise_multiplier: float, sampling_rate: float, steps: int) -> None:
    if not math.isfinite(noise_multiplier) or noise_multiplier <= 0:
        raise PrivacyAccountingError(
            f"noise_multiplier must be a positive finite number, got {noise_multiplier}"
        )
    if not 0.0 < sampling_rate <= 1.0:
        raise PrivacyAccountingError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    if steps < 0:
        raise PrivacyAccountingError(f"steps must be non-negative, got {steps}")


def sampled_gaussian_rdp(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    orders: Sequence[int] = DEFAULT_ORDERS,
) -> tuple[float, ...]:
    """RDP ``ε(α)`` for each order after ``steps`` compositions of the mechanism."""
    _validate(noise_multiplier, sampling_rate, steps)
    if any(order < 2 for order in orders):
        raise PrivacyAccountingError("Rényi orders must be integers of at least 2")
    if sampling_rate == 1.0:
        return tuple(steps * order / (2.0 * noise_multiplier**2) for order in orders)
    return tuple(
        steps * _log_a_integer(sampling_rate, noise_multiplier, order) / (order - 1)
        for order in orders
    )


def rdp_to_epsilon(
    rdp: Sequence[float], delta: float, orders: Sequence[int] = DEFAULT_ORDERS
) -> tuple[float, int]:
    """Best ``(ε, α)`` for ``(ε, δ)``-DP from an RDP curve (Balle et al. 2020, Thm 21)."""
    if not 0.0 < delta < 1.0:
        raise PrivacyAccountingError(f"delta must be in (0, 1), got {delta}")
    if len(rdp) != len(orders) or not orders:
        raise PrivacyAccountingError("the RDP curve and the orders must have equal length")
    best = (math.inf, orders[0])
    for order, value in zip(orders, rdp, strict=True):
        epsilon = (
            value
            + math.log((order - 1) / order)
            - (math.log(delta) + math.log(order)) / (order - 1)
        )
        if epsilon < best[0]:
            best = (epsilon, order)
    return max(best[0], 0.0), best[1]


def gaussian_epsilon(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    delta: float,
    orders: Sequence[int] = DEFAULT_ORDERS,
) -> float:
    """ε at ``delta`` after ``steps`` runs of the sampled Gaussian mechanism."""
    rdp = sampled_gaussian_rdp(noise_multiplier, sampling_rate, steps, orders)
    return rdp_to_epsilon(rdp, delta, orders)[0]
