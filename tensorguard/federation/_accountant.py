"""Rényi-DP accounting for the Gaussian mechanism (and, for tests, its sampled form).

Formulas, all standard:

* RDP of the Gaussian mechanism with noise multiplier ``σ`` (noise std ``σ·Δ`` on
  L2 sensitivity ``Δ``) at any order ``α > 1``: ``ε(α) = α / (2σ²)``;
* RDP of the *sampled* Gaussian mechanism with sampling rate ``q`` (Mironov, Talwar,
  Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism", §3.3):
  ``ε(α) = log A_α / (α-1)`` with, for integer ``α``::

      A_α = Σ_{i=0..α} C(α,i) (1-q)^(α-i) q^i exp((i²-i) / (2σ²))

  and, for fractional ``α``, the two-sided series of §3.3 with ``z₀ = σ² log(1/q - 1)
  + 1/2`` (generalised binomial coefficients, which change sign past ``α``)::

      A_α = Σ_{i≥0} C(α,i) q^i (1-q)^(α-i) e^((i²-i)/(2σ²)) · ½ erfc((i - z₀)/(√2 σ))
          + Σ_{i≥0} C(α,i) q^(α-i) (1-q)^i e^(((α-i)²-(α-i))/(2σ²)) · ½ erfc((z₀ - (α-i))/(√2 σ));

* composition over steps and rounds adds RDP order by order;
* conversion to ``(ε, δ)``-DP (Balle et al. 2020, "Hypothesis testing
  interpretations and Rényi differential privacy", Theorem 21; also what opacus's
  ``get_privacy_spent`` uses)::

      ε = min_α  ε_RDP(α) + log((α-1)/α) - (log δ + log α) / (α-1)

The federation's ledger only ever charges ``q = 1`` (no site sampling is implemented);
the sampled form is kept so that the tests can compare the whole accountant with
opacus's. On the same orders the two agree to floating-point precision; the default
orders here are a superset of opacus's default grid, so ε here is never larger than
opacus's default ``RDPAccountant`` reports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from tensorguard.federation._errors import PrivacyAccountingError

DEFAULT_ORDERS: tuple[float, ...] = tuple(
    [1.0 + tenth / 10.0 for tenth in range(1, 100)] + [float(order) for order in range(11, 257)]
)
"""Rényi orders searched when converting to (ε, δ): 1.1, 1.2, …, 10.9 and 11, 12, …, 256.

A superset of opacus's default grid (1.1…10.9 in tenths, 12…63): fractional orders
near 1 matter when ε is large (few noise, many rounds), high orders when it is small.
"""

_NEGLIGIBLE_LOG_TERM = -30.0
"""The fractional-order series stops once past ``α`` both terms are below e^-30."""

_MAX_SERIES_TERMS = 100_000


def _log_add(a: float, b: float) -> float:
    """``log(e^a + e^b)`` without overflow."""
    if a == -math.inf:
        return b
    if b == -math.inf:
        return a
    high, low = max(a, b), min(a, b)
    return high + math.log1p(math.exp(low - high))


def _log_sub(a: float, b: float) -> float:
    """``log(e^a - e^b)`` for ``a >= b``."""
    if b == -math.inf:
        return a
    if b > a:
        raise PrivacyAccountingError(
            "the sampled Gaussian RDP series did not converge to a positive value"
        )
    if a == b:
        return -math.inf
    return a + math.log(-math.expm1(b - a))


def _log_erfc(x: float) -> float:
    """``log erfc(x)``, accurate where ``erfc`` itself underflows (large ``x``)."""
    if x < 20.0:
        return math.log(math.erfc(x))
    # Asymptotic expansion: erfc(x) = e^(-x²)/(x√π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶) …).
    inverse_square = 1.0 / (x * x)
    series = 1.0 - inverse_square / 2 + 3 * inverse_square**2 / 4 - 15 * inverse_square**3 / 8
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log(series)


def _log_a_integer(sampling_rate: float, noise_multiplier: float, order: int) -> float:
    """``log A_α`` for integer ``α`` (the finite sum above, in log space)."""
    log_a = -math.inf
    log_q = math.log(sampling_rate)
    log_1mq = math.log1p(-sampling_rate)
    for k in range(order + 1):
        log_binomial = math.lgamma(order + 1) - math.lgamma(k + 1) - math.lgamma(order - k + 1)
        term = (
            log_binomial
            + k * log_q
            + (order - k) * log_1mq
            + (k * k - k) / (2.0 * noise_multiplier**2)
        )
        log_a = _log_add(log_a, term)
    return log_a


def _log_a_fractional(sampling_rate: float, noise_multiplier: float, order: float) -> float:
    """``log A_α`` for fractional ``α`` (the two-sided series above).

    Positive and negative terms (the generalised binomial coefficient changes sign
    for ``i > α``) are summed separately in log space and subtracted at the end.
    """
    sigma = noise_multiplier
    log_q = math.log(sampling_rate)
    log_1mq = math.log1p(-sampling_rate)
    z0 = sigma**2 * (log_1mq - log_q) + 0.5
    positive, negative = -math.inf, -math.inf
    log_coefficient, sign = 0.0, 1.0  # C(α, 0) = 1
    for i in range(_MAX_SERIES_TERMS):
        if i > 0:
            factor = (order - (i - 1)) / i  # C(α, i) = C(α, i-1) · (α - i + 1) / i
            sign *= 1.0 if factor > 0 else -1.0
            log_coefficient += math.log(abs(factor))
        j = order - i
        log_s0 = (
            log_coefficient
            + i * log_q
            + j * log_1mq
            + (i * i - i) / (2 * sigma**2)
            + math.log(0.5)
            + _log_erfc((i - z0) / (math.sqrt(2) * sigma))
        )
        log_s1 = (
            log_coefficient
            + j * log_q
            + i * log_1mq
            + (j * j - j) / (2 * sigma**2)
            + math.log(0.5)
            + _log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        )
        if sign > 0:
            positive = _log_add(positive, _log_add(log_s0, log_s1))
        else:
            negative = _log_add(negative, _log_add(log_s0, log_s1))
        if i > order and max(log_s0, log_s1) < _NEGLIGIBLE_LOG_TERM:
            return _log_sub(positive, negative)
    raise PrivacyAccountingError(
        f"the sampled Gaussian RDP series did not converge at order {order} "
        f"(q={sampling_rate}, σ={noise_multiplier})"
    )


def _validate(noise_multiplier: float, sampling_rate: float, steps: int) -> None:
    if not math.isfinite(noise_multiplier) or noise_multiplier <= 0:
        raise PrivacyAccountingError(
            f"noise_multiplier must be a positive finite number, got {noise_multiplier}"
        )
    if not 0.0 < sampling_rate <= 1.0:
        raise PrivacyAccountingError(f"sampling_rate must be in (0, 1], got {sampling_rate}")
    if steps < 0:
        raise PrivacyAccountingError(f"steps must be non-negative, got {steps}")


def _validate_orders(orders: Sequence[float]) -> None:
    if not orders or any(not (math.isfinite(order) and order > 1) for order in orders):
        raise PrivacyAccountingError("Rényi orders must be finite numbers above 1")


def gaussian_rdp(
    noise_multiplier: float, steps: int, orders: Sequence[float] = DEFAULT_ORDERS
) -> tuple[float, ...]:
    """RDP ``ε(α) = steps · α / (2σ²)`` of ``steps`` runs of the Gaussian mechanism."""
    _validate(noise_multiplier, 1.0, steps)
    _validate_orders(orders)
    return tuple(steps * order / (2.0 * noise_multiplier**2) for order in orders)


def sampled_gaussian_rdp(
    noise_multiplier: float,
    sampling_rate: float,
    steps: int,
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> tuple[float, ...]:
    """RDP ``ε(α)`` for each order after ``steps`` compositions of the sampled mechanism."""
    _validate(noise_multiplier, sampling_rate, steps)
    _validate_orders(orders)
    if sampling_rate == 1.0:
        return gaussian_rdp(noise_multiplier, steps, orders)
    curve: list[float] = []
    for order in orders:
        if float(order).is_integer():
            log_a = _log_a_integer(sampling_rate, noise_multiplier, int(order))
        else:
            log_a = _log_a_fractional(sampling_rate, noise_multiplier, order)
        curve.append(steps * log_a / (order - 1))
    return tuple(curve)


def rdp_to_epsilon(
    rdp: Sequence[float], delta: float, orders: Sequence[float] = DEFAULT_ORDERS
) -> tuple[float, float]:
    """Best ``(ε, α)`` for ``(ε, δ)``-DP from an RDP curve (Balle et al. 2020, Thm 21)."""
    if not 0.0 < delta < 1.0:
        raise PrivacyAccountingError(f"delta must be in (0, 1), got {delta}")
    if len(rdp) != len(orders) or not orders:
        raise PrivacyAccountingError("the RDP curve and the orders must have equal length")
    _validate_orders(orders)
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
    orders: Sequence[float] = DEFAULT_ORDERS,
) -> float:
    """ε at ``delta`` after ``steps`` runs of the (sampled) Gaussian mechanism."""
    rdp = sampled_gaussian_rdp(noise_multiplier, sampling_rate, steps, orders)
    return rdp_to_epsilon(rdp, delta, orders)[0]
