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
3. the custodian decrypts ``Σ m_i · 2**-k + e`` where ``e`` is the CKKS error, and rounds
   to the nearest grid point (:func:`snap`). While ``|e| < 2**-(k+1)`` that recovers the
   exact sum bit for bit, independent of the encryption randomness.

Error model (measured and derived, see docs/REPRODUCIBILITY.md): with public-key
encryption SEAL divides by the special prime and rounds; the rounding residue of the
second ciphertext component is multiplied by the ternary secret (about 2N/3 non-zero
coefficients), so each coefficient of the decryption error has variance about N/18 and
each slot of one ciphertext an error of standard deviation about ``N / (6 · Δ)``
(:func:`ckks_noise_std`; N = 8192, Δ = 2**46: 1.94e-11, measured 1.94e-11). Errors of
independent encryptions add, so a sum of ``S`` sites has ``√S`` times that. The grid is
chosen (:func:`grid_bits_for`) so that half a grid step is at least
:data:`GRID_SIGMAS` standard deviations of a sum of ``max_sites`` sites; the error is a
sum of thousands of independent terms (Gaussian to high accuracy), so one coordinate
rounds wrongly with probability below ``2·Φ(-16) ≈ 1.3e-57``.

After snapping, the custodian checks that every slot's distance to the grid is below
half of that margin (:func:`check_on_grid`): a site that skipped quantisation, or noise
beyond the model, fails closed instead of yielding an aggregate that is not reproducible.
"""

from __future__ import annotations

import math

import numpy as np

from tensorguard.federation._errors import DecryptionError, FederationParamsError
from tensorguard.federation._layout import FloatVector
from tensorguard.federation._params import FederationParams

GRID_SIGMAS = 16
"""Half a grid step is at least this many standard deviations of the CKKS error of a
sum of ``max_sites`` encryptions."""
MIN_GRID_BITS = 16
"""The coarsest grid allowed (2**-16 ≈ 1.5e-5): coarser would distort the training signal."""
FLOAT64_MANTISSA_BITS = 52
OFF_GRID_FRACTION = 0.25
"""A decrypted slot farther than this fraction of a grid step from the grid is refused."""


def ckks_noise_std(params: FederationParams, sites: int) -> float:
    """Standard deviation of one slot's decryption error for a sum of ``sites`` fresh
    public-key encryptions: ``√sites · N / (6 · Δ)``."""
    return math.sqrt(sites) * params.poly_modulus_degree / (6.0 * params.scale)


def grid_bits_for(params: FederationParams) -> int:
    """The finest grid ``2**-k`` whose half step is at least :data:`GRID_SIGMAS` standard
    deviations of the error of a full aggregate (``params.max_sites`` sites)."""
    margin = GRID_SIGMAS * ckks_noise_std(params, params.max_sites)
    bits = math.floor(-math.log2(2.0 * margin))
    check_grid_bits(params, bits)
    return bits


def check_grid_bits(params: FederationParams, bits: int) -> int:
    """Return ``bits`` if the grid ``2**-bits`` decodes reliably under ``params``.

    Refused (:class:`FederationParamsError`): coarser than :data:`MIN_GRID_BITS`; so
    fine that half a step is within :data:`GRID_SIGMAS` noise standard deviations of a
    ``max_sites`` aggregate; or so fine that the largest decodable sum, counted in grid
    steps, no longer fits float64's mantissa exactly.
    """
    margin = GRID_SIGMAS * ckks_noise_std(params, params.max_sites)
    headroom = math.log2(params.aggregate_value_bound) + bits
    if bits < MIN_GRID_BITS or math.ldexp(1.0, -bits - 1) < margin:
        raise FederationParamsError(
            f"aggregate grid 2^-{bits} does not fit this federation: the grid must be at "
            f"most 2^-{MIN_GRID_BITS} and half a step must exceed {GRID_SIGMAS}× the CKKS "
            f"noise of {params.max_sites} sites ({margin:.3g}); use grid_bits_for(params) "
            f"= {math.floor(-math.log2(2.0 * margin))}"
        )
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
