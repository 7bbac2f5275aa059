"""The deterministic decoding rule: sites send values on a fixed-point grid, the custodian
rounds the decrypted sum back onto it.

CKKS decryption returns every slot with fresh encryption noise in its low bits, so two
encryptions of the same updates decrypt to different floats. Rounding only the decrypted
values to a grid cannot fix that: a value near a grid boundary rounds up in one run and
down in the other. The sound construction moves the grid to the sites:

1. each site rounds its (clipped, weighted, DP-noised) update to the nearest multiple of
   ``2**-k`` *before* encryption (:func:`quantise`), where ``k`` is the round spec's
   ``aggregate_grid_bits``; multiplying by a power of two and ``rint`` are exact in
   float64, so the result is ``m_i · 2**-k`` with integer ``m_i``;
2. the exact sum of the sites is then ``(Σ m_i) · 2**-k``, on the same grid (the
   pairwise masks cancel exactly modulo the ciphertext primes and do not enter);
3. the custodian decrypts ``Σ m_i · 2**-k + e`` where ``e`` is the CKKS error, rounds to
   the nearest grid point (:func:`snap`) and refuses the sum if any value lay more than
   :data:`OFF_GRID_FRACTION` (a quarter) of a step from the grid (:func:`check_on_grid`):
   a site that skipped quantisation fails closed instead of yielding an aggregate that
   is not reproducible. While ``|e| < 2**-(k+1)`` the rounding recovers the exact sum bit
   for bit, independent of the encryption randomness.

Error model (derived, and measured by ``bench/bench_slot_noise.py``; numbers in
docs/REPRODUCIBILITY.md). With public-key encryption SEAL divides by the special prime
and rounds; the rounding residue ``r`` of the second ciphertext component is multiplied
by the ternary secret ``s``, so slot ``j`` of a decryption carries the error
``r(ζ_j) · s(ζ_j) / Δ`` (``ζ_j`` the slot's root of unity), and a sum of ``S``
encryptions ``(Σ r_i(ζ_j)) · s(ζ_j) / Δ``. Averaged over the slots the real (and the
imaginary) part has standard deviation ``σ_S = √S · N / (6 · Δ)`` (:func:`ckks_noise_std`;
N = 8192, Δ = 2**46: 1.94e-11 for one encryption). But the error is **not uniform across
slots**: ``s(ζ_j)`` is fixed by the key ceremony, so slot ``j``'s error is Gaussian with
standard deviation ``σ_S · √X_j``, where ``X_j = |s(ζ_j)|² / E|s(ζ)|²``. Each ``s(ζ_j)``
is a sum of N ternary terms, a complex Gaussian, so ``X_j`` is exponential with mean 1:
per slot the standard deviation ranges from a few hundredths to about 3.5 times the
mean, and a value in a random slot follows a *Laplace* law (a Gaussian whose variance
is exponential; kurtosis 6) with tail ``P(|e| > t) = exp(-√2 · t / σ_S)``, far heavier
than a Gaussian's. Sizing the grid from ``σ_S`` as if the error were Gaussian (the rule
before, half a step = 16 σ) lets the worst slots of a 64-site, million-value round cross
the quarter-step refusal in about 4 % of rounds.

The grid (:func:`grid_bits_for`) is therefore sized from that tail: with the error scale
inflated by :data:`WORST_SLOT_SAFETY`, the union bound over the values of a round of
:data:`MAX_ROUND_VALUES` values (or the round's own count, if larger) summed over
``params.max_sites`` sites must keep the probability that any value of an honest sum
trips the refusal below :data:`ROUND_FAILURE_BOUND` per round (averaged over key
ceremonies). Rounding to a wrong grid point needs twice the distance, so its probability
is far below that (:func:`round_failure_bounds`). Because one key serves many rounds, the
grid must also hold for an unlucky key: one whose worst slot sits at the
:data:`ROUND_FAILURE_BOUND` quantile of key generation, with every value of the round as
noisy as that slot (:func:`worst_key_refusal_bound`).
"""

from __future__ import annotations

import math

import numpy as np

from tensorguard.federation._errors import DecryptionError, FederationParamsError
from tensorguard.federation._layout import FloatVector
from tensorguard.federation._params import FederationParams

ROUND_FAILURE_BOUND = 1e-9
"""Per round, the most probability allowed that an honest aggregate is refused (a value
past the quarter-step margin), and separately that a value rounds to a wrong grid point."""
MAX_ROUND_VALUES = 2**27
"""The aggregate size (values per site update, ~134 M) every grid is sized for; a round
with more values is checked for its own count."""
WORST_SLOT_SAFETY = 1.5
"""Factor on the error scale ``σ_S`` before the tail bound is applied: the bound must hold
even if every slot's error were 1.5 times what the model and the measurement give (the
model leaves out the encoding rounding and the first component's residue, relative
variance ~2e-4, and the ternary sums' departure from a Gaussian in the far tail)."""
MIN_GRID_BITS = 16
"""The coarsest grid allowed (2**-16 ≈ 1.5e-5): coarser would distort the training signal."""
FLOAT64_MANTISSA_BITS = 52
OFF_GRID_FRACTION = 0.25
"""A decrypted slot farther than this fraction of a grid step from the grid is refused."""


def ckks_noise_std(params: FederationParams, sites: int) -> float:
    """The error scale ``σ_S``: the standard deviation, averaged over the slots (root mean
    square), of one decrypted value of a sum of ``sites`` fresh public-key encryptions:
    ``√sites · N / (6 · Δ)``. A single slot's is ``σ_S · √X_j`` (see the module notes)."""
    return math.sqrt(sites) * params.poly_modulus_degree / (6.0 * params.scale)


def value_error_tail(
    params: FederationParams, sites: int, distance: float, safety: float = 1.0
) -> float:
    """Probability that one decrypted value of a sum of ``sites`` encryptions lies more
    than ``distance`` from the encrypted value, over the key ceremony (which slot is a
    bad one) and the encryptions: the Laplace tail ``exp(-√2 · distance / (safety · σ_S))``."""
    scale = safety * ckks_noise_std(params, sites)
    return math.exp(-math.sqrt(2.0) * distance / scale)


def round_values(values: int) -> int:
    """The value count a grid must serve: the round's own, but never below
    :data:`MAX_ROUND_VALUES`, so that the grid depends on the parameters alone."""
    return max(int(values), MAX_ROUND_VALUES)


def round_failure_bounds(
    params: FederationParams, bits: int, values: int, safety: float = WORST_SLOT_SAFETY
) -> tuple[float, float]:
    """Per-round bounds ``(refused, misrounded)`` for an honest sum of ``params.max_sites``
    updates of ``values`` values on the grid ``2**-bits``: the union bound over the values
    of :func:`value_error_tail` at a quarter step (the refusal margin) and at half a step
    (the nearest grid point is another one), with the error scale times ``safety``."""
    step = math.ldexp(1.0, -bits)
    refused, misrounded = (
        min(1.0, values * value_error_tail(params, params.max_sites, fraction * step, safety))
        for fraction in (OFF_GRID_FRACTION, 0.5)
    )
    return refused, misrounded


def worst_slot_scale(params: FederationParams) -> float:
    """``√x`` for the :data:`ROUND_FAILURE_BOUND` quantile ``x`` of a key's largest slot
    variance ratio ``max_j X_j``: ``P(max_j X_j > x) ≤ slots · e^-x`` (5.39 for N = 8192)."""
    return math.sqrt(math.log(params.slot_count / ROUND_FAILURE_BOUND))


def worst_key_refusal_bound(params: FederationParams, bits: int, values: int) -> float:
    """For a key at the :data:`ROUND_FAILURE_BOUND` quantile of key generation, a bound on
    the probability that an honest ``max_sites`` sum of ``values`` values is refused: every
    value as noisy as that key's worst slot (Gaussian, ``σ_S · worst_slot_scale``), union
    bound over the values."""
    sigma = ckks_noise_std(params, params.max_sites) * worst_slot_scale(params)
    margin = OFF_GRID_FRACTION * math.ldexp(1.0, -bits)
    return min(1.0, values * math.erfc(margin / (sigma * math.sqrt(2.0))))


def _refusal_bound(params: FederationParams, bits: int, values: int) -> float:
    """The larger of the two refusal bounds the grid must keep below the bound."""
    averaged, _ = round_failure_bounds(params, bits, values)
    return max(averaged, worst_key_refusal_bound(params, bits, values))


def _finest_bits(params: FederationParams, values: int) -> int:
    """The largest ``k`` whose quarter step meets :data:`ROUND_FAILURE_BOUND` for ``values``
    values: first ``2**-k · OFF_GRID_FRACTION ≥ safety · σ_S · ln(values / bound) / √2``
    (the averaged bound), then coarser while the worst-key bound is not met."""
    sigma = WORST_SLOT_SAFETY * ckks_noise_std(params, params.max_sites)
    margin = sigma * math.log(values / ROUND_FAILURE_BOUND) / math.sqrt(2.0)
    bits = math.floor(-math.log2(margin / OFF_GRID_FRACTION))
    while bits > 0 and _refusal_bound(params, bits, values) > ROUND_FAILURE_BOUND:
        bits -= 1
    return bits


def grid_bits_for(params: FederationParams, values: int = 0) -> int:
    """The finest grid ``2**-k`` on which an honest aggregate of ``params.max_sites`` sites
    is refused, or rounds to a wrong grid point, with probability below
    :data:`ROUND_FAILURE_BOUND` per round, averaged over keys (:func:`round_failure_bounds`)
    and for an unlucky key (:func:`worst_key_refusal_bound`), for rounds of up to
    :data:`MAX_ROUND_VALUES` values (or ``values``, if larger). Defaults: ``k = 25``."""
    bits = _finest_bits(params, round_values(values))
    check_grid_bits(params, bits, values)
    return bits


def check_grid_bits(params: FederationParams, bits: int, values: int = 0) -> int:
    """Return ``bits`` if the grid ``2**-bits`` decodes reliably under ``params`` for a
    round of ``values`` values (at least :data:`MAX_ROUND_VALUES` are assumed).

    Refused (:class:`FederationParamsError`): coarser than :data:`MIN_GRID_BITS`; so fine
    that an honest sum of ``max_sites`` sites would be refused (or misrounded) with
    probability above :data:`ROUND_FAILURE_BOUND` per round, averaged over keys
    (:func:`round_failure_bounds`) or for an unlucky key (:func:`worst_key_refusal_bound`);
    or so fine that the largest decodable sum, counted in grid steps, no longer fits
    float64's mantissa exactly.
    """
    count = round_values(values)
    if bits < MIN_GRID_BITS:
        raise FederationParamsError(
            f"aggregate grid 2^-{bits} does not fit this federation: the grid must be at "
            f"most 2^-{MIN_GRID_BITS}, or its rounding distorts the training signal"
        )
    refused = _refusal_bound(params, bits, count)
    if refused > ROUND_FAILURE_BOUND:
        raise FederationParamsError(
            f"aggregate grid 2^-{bits} does not fit this federation: CKKS noise in the worst "
            f"slots of a {params.max_sites}-site sum of {count} values would cross the "
            f"quarter-step refusal with probability up to {refused:.2g} per round (at most "
            f"{ROUND_FAILURE_BOUND:g} allowed). Round specs signed before the worst-slot rule "
            "(2^-27 with the default parameters) are refused for that reason; re-open the "
            f"round with grid_bits_for(params) = {_finest_bits(params, count)}"
        )
    headroom = math.log2(params.aggregate_value_bound) + bits
    if headroom > FLOAT64_MANTISSA_BITS:
        raise FederationParamsError(
            f"aggregate grid 2^-{bits} is too fine for sums up to "
            f"{params.aggregate_value_bound:g} to be exact in float64"
        )
    return bits


def quantise(values: FloatVector, bits: int) -> FloatVector:
    """``values`` rounded to the nearest multiple of ``2**-bits`` (ties to even), exactly."""
    scaled = np.ldexp(np.asarray(values, dtype=np.float64), bits)
    result: FloatVector = np.ldexp(np.rint(scaled), -bits)
    return result


def snap(decrypted: FloatVector, bits: int) -> tuple[FloatVector, float]:
    """The grid point nearest each decrypted value, and the largest distance to it in
    grid steps (0 ≤ distance ≤ 0.5)."""
    scaled = np.ldexp(np.asarray(decrypted, dtype=np.float64), bits)
    steps = np.rint(scaled)
    worst = float(np.max(np.abs(scaled - steps))) if scaled.size else 0.0
    snapped: FloatVector = np.ldexp(steps, -bits)
    return snapped, worst


def check_on_grid(decrypted: FloatVector, bits: int) -> FloatVector:
    """Snap the decrypted sum to the grid; refuse (:class:`DecryptionError`) a sum whose
    values lie farther than :data:`OFF_GRID_FRACTION` of a step from the grid."""
    snapped, worst = snap(decrypted, bits)
    if worst > OFF_GRID_FRACTION:
        raise DecryptionError(
            f"the decrypted aggregate lies up to {worst:.3f} grid steps off the round's "
            f"grid 2^-{bits} (CKKS noise keeps an honest sum within "
            f"{OFF_GRID_FRACTION}); a site did not quantise its update to the grid, so "
            "the aggregate would not be reproducible. Re-run the round with updates built "
            "by build_site_update"
        )
    return snapped


def quantisation_error_bound(bits: int, sites: int, length: int) -> float:
    """Largest L2 norm the sites' rounding adds to the encrypted sum of ``sites`` vectors
    of ``length`` values: ``√length · sites · 2**-(bits+1)``."""
    return math.sqrt(length) * sites * math.ldexp(1.0, -bits - 1)
