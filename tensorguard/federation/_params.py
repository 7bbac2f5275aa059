"""CKKS parameters for the federation and the security level they reach.

Only ciphertext additions happen in the federation (sites pre-multiply their weight,
the aggregator sums), so no multiplicative depth is needed. The coefficient modulus
therefore holds exactly one *data* prime, which is all a ciphertext carries, plus
the *special* prime SEAL reserves for key switching. Public-key encryption in SEAL
encrypts at the special-prime level and divides it out, so a large special prime
also shrinks fresh-encryption noise to the rounding floor at no cost in ciphertext
size.

Security follows the Homomorphic Encryption Standard (Albrecht et al., 2018,
Table 1, ternary secret distribution, the one SEAL samples): for each ring degree N,
the largest total modulus bit count ``log2(Q)`` that keeps the classical security
level at or above 128, 192 or 256 bits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tensorguard.federation._errors import FederationParamsError

SecurityLevel = Literal[128, 192, 256]

HE_STANDARD_MAX_MODULUS_BITS: dict[int, dict[int, int]] = {
    1024: {128: 27, 192: 19, 256: 14},
    2048: {128: 54, 192: 37, 256: 29},
    4096: {128: 109, 192: 75, 256: 58},
    8192: {128: 218, 192: 152, 256: 118},
    16384: {128: 438, 192: 305, 256: 237},
    32768: {128: 881, 192: 611, 256: 476},
}
"""HE Standard Table 1 (ternary secret): N -> security level -> max ``log2(Q)``."""

MIN_PRIME_BITS = 20
MAX_PRIME_BITS = 60
OVERFLOW_MARGIN_BITS = 1
NOISE_TAIL_SIGMAS = 7
"""Standard deviations of DP noise a coordinate may carry and still encode."""
"""Extra headroom below ``q/2`` kept free for encryption noise and rounding."""


def he_standard_violation(
    poly_modulus_degree: int, coeff_mod_bit_sizes: Sequence[int], security_level: int
) -> str | None:
    """Why these CKKS parameters miss the HE Standard at ``security_level``, else ``None``.

    The ring degree must be in :data:`HE_STANDARD_MAX_MODULUS_BITS` and the total modulus
    within its limit. Callers raise their own area's error with the returned text.
    """
    levels = HE_STANDARD_MAX_MODULUS_BITS.get(poly_modulus_degree)
    if levels is None:
        return (
            f"poly_modulus_degree {poly_modulus_degree} is not one of "
            f"{sorted(HE_STANDARD_MAX_MODULUS_BITS)}; pick a power of two in that range"
        )
    total, limit = sum(coeff_mod_bit_sizes), levels[security_level]
    if total > limit:
        return (
            f"coeff_mod_bit_sizes {list(coeff_mod_bit_sizes)} total {total} bits, above the "
            f"{limit} bits the HE Standard allows for N={poly_modulus_degree} at "
            f"{security_level}-bit security; use fewer or smaller primes or a larger "
            "poly_modulus_degree"
        )
    return None


class FederationParams(BaseModel):
    """CKKS parameters chosen at the key ceremony and shared by the whole federation.

    The defaults (N = 8192, primes of 60 and 58 bits, scale 2^46) give a total
    modulus of 118 bits, which meets the HE Standard's 256-bit level for N = 8192,
    while a ciphertext only carries the 60-bit data prime: 2 · N · 8 bytes per
    ciphertext, so about 16 bytes per 4-byte float with complex packing (N = 8192
    values per ciphertext) and 32 with real packing (N/2); see
    :mod:`tensorguard.federation._packing`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    poly_modulus_degree: int = Field(default=8192, description="CKKS ring degree N.")
    coeff_mod_bit_sizes: tuple[int, ...] = Field(
        default=(60, 58),
        description="Bit sizes of the RNS primes; the last one is SEAL's special prime.",
    )
    scale_bits: int = Field(default=46, description="log2 of the CKKS encoding scale.")
    max_sites: int = Field(default=64, ge=2, description="Most site updates one aggregate may sum.")
    min_security_level: SecurityLevel = Field(
        default=128, description="Required classical security level (HE Standard)."
    )

    @model_validator(mode="after")
    def _check(self) -> FederationParams:
        sizes = self.coeff_mod_bit_sizes
        if len(sizes) < 2:
            raise FederationParamsError(
                "coeff_mod_bit_sizes needs at least two primes (one data prime and "
                "SEAL's special prime for key switching), e.g. (60, 58)"
            )
        if any(not MIN_PRIME_BITS <= bits <= MAX_PRIME_BITS for bits in sizes):
            raise FederationParamsError(
                f"each prime must have {MIN_PRIME_BITS}..{MAX_PRIME_BITS} bits, got {sizes}"
            )
        violation = he_standard_violation(self.poly_modulus_degree, sizes, self.min_security_level)
        if violation is not None:
            raise FederationParamsError(violation)
        if self.site_value_bound < 1.0:
            raise FederationParamsError(
                f"scale 2^{self.scale_bits} leaves too little headroom in a "
                f"{self.data_modulus_bits}-bit data modulus for {self.max_sites} sites: "
                "lower scale_bits or max_sites, or use a larger data prime"
            )
        if self.scale_bits < MIN_PRIME_BITS:
            raise FederationParamsError(
                f"scale_bits={self.scale_bits} is too small for useful precision; "
                f"use at least {MIN_PRIME_BITS}"
            )
        return self

    @property
    def slot_count(self) -> int:
        """CKKS slots per ciphertext: N/2 (one value each with real packing, two with
        complex packing)."""
        return self.poly_modulus_degree // 2

    @property
    def data_modulus_bits(self) -> int:
        """Bits of the modulus a fresh ciphertext carries (all primes but the special)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def total_modulus_bits(self) -> int:
        """``log2(Q)`` including the special prime: what the security level depends on."""
        return sum(self.coeff_mod_bit_sizes)

    @property
    def scale(self) -> float:
        """The CKKS encoding scale, ``2**scale_bits``."""
        return float(2**self.scale_bits)

    @property
    def security_level(self) -> int:
        """Highest HE Standard level (128/192/256) these parameters meet."""
        levels = HE_STANDARD_MAX_MODULUS_BITS[self.poly_modulus_degree]
        return max(level for level, bits in levels.items() if self.total_modulus_bits <= bits)

    @property
    def aggregate_value_bound(self) -> float:
        """Largest |value| any slot of a sum may hold and still decode correctly.

        A data prime of ``b`` bits is at least ``2**(b-1)``; a slot decodes correctly
        while ``scale * |value| < q/2``, with :data:`OVERFLOW_MARGIN_BITS` kept free.
        """
        return math.ldexp(1.0, self.data_modulus_bits - 2 - OVERFLOW_MARGIN_BITS - self.scale_bits)

    @property
    def site_value_bound(self) -> float:
        """Largest |weighted value| one site may encrypt so that any sum stays decodable."""
        return self.aggregate_value_bound / self.max_sites

    def check_clip_norm(self, clip_norm: float, noise_std: float = 0.0) -> float:
        """Return ``clip_norm`` if every honest update clipped to it can be encoded.

        A delta clipped to L2 norm ``C`` has no coordinate above ``C``, and weighting
        only shrinks it, so ``C <= site_value_bound`` guarantees that no honest site
        inside the clip bound ever meets :class:`EncodingCapacityError`. With DP, each
        coordinate also carries Gaussian noise of std ``noise_std``; the bound then keeps
        :data:`NOISE_TAIL_SIGMAS` standard deviations of headroom (a coordinate beyond
        that has probability ~3e-12, so a million-value update fails ~3e-6 of the time).
        """
        needed = clip_norm + NOISE_TAIL_SIGMAS * noise_std
        if not (clip_norm > 0 and noise_std >= 0 and needed <= self.site_value_bound):
            noise = (
                f" plus {NOISE_TAIL_SIGMAS}× the DP noise std {noise_std:.4g}" if noise_std else ""
            )
            raise FederationParamsError(
                f"clip_norm {clip_norm}{noise} exceeds the per-site CKKS bound "
                f"{self.site_value_bound:.6g} of this federation (scale 2^{self.scale_bits}, "
                f"{self.data_modulus_bits}-bit data modulus, {self.max_sites} sites): an honest "
                "site at its maximum weight could not encode its update. Lower clip_norm (or "
                "the noise multiplier), or re-run the key ceremony with a smaller scale_bits "
                "or max_sites"
            )
        return clip_norm

    def summary(self) -> dict[str, int | float]:
        """Plain values for logs and metadata (no key material)."""
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "slot_count": self.slot_count,
            "data_modulus_bits": self.data_modulus_bits,
            "total_modulus_bits": self.total_modulus_bits,
            "scale_bits": self.scale_bits,
            "security_level_bits": self.security_level,
            "max_sites": self.max_sites,
            "site_value_bound": self.site_value_bound,
        }
