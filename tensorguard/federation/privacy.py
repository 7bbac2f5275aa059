"""Differential privacy for site updates: Gaussian noise and a per-site budget ledger.

Each round, a site clips its update to L2 norm ``C`` and, when DP is enabled, adds
independent Gaussian noise of standard deviation ``noise_multiplier · C`` to every
coordinate. Releasing the noised update is one run of the Gaussian mechanism with
sensitivity ``C`` under add/remove-one-site adjacency; the
:class:`PrivacyLedger` composes these runs in RDP across rounds and refuses, before
any noise is drawn or anything is released, a round that would push the site's
cumulative ε past its budget.

Noise comes from numpy's PCG64 generator seeded with 256 bits from the operating
system's CSPRNG. Like most DP libraries, this samples floating-point Gaussians, which
are known to leak through their low-order bits (Mironov 2012); treat ε as the
guarantee of the idealised mechanism.
"""

from __future__ import annotations

import json
import math
import secrets
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tensorguard.federation.accountant import (
    DEFAULT_ORDERS,
    rdp_to_epsilon,
    sampled_gaussian_rdp,
)
from tensorguard.federation.errors import PrivacyAccountingError, PrivacyBudgetExceededError
from tensorguard.federation.layout import FloatVector

LEDGER_FORMAT = "tensorguard.federation.privacy-ledger/v1"


class DPConfig(BaseModel):
    """Differential-privacy settings for a site's updates."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    noise_multiplier: float = Field(gt=0, description="Noise std divided by the clip norm.")
    delta: float = Field(gt=0, lt=1, description="Target δ of the (ε, δ) guarantee.")
    epsilon_budget: float = Field(gt=0, description="Cumulative ε a site may spend.")
    sampling_rate: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="Probability that the site's update is included (1.0: every round).",
    )
    steps_per_round: int = Field(
        default=1, ge=1, description="Mechanism runs per round (1 for one noised update)."
    )


@dataclass(frozen=True)
class PrivacyCharge:
    """One round's use of the Gaussian mechanism."""

    round_id: str
    noise_multiplier: float
    sampling_rate: float
    steps: int


@dataclass(frozen=True)
class PrivacyReport:
    """(ε, δ) for one round alone and for everything the site has released so far."""

    round_id: str
    delta: float
    epsilon_round: float
    epsilon_total: float
    epsilon_budget: float
    noise_multiplier: float

    def to_json(self) -> dict[str, object]:
        """Plain values for the envelope and metadata."""
        return {
            "round_id": self.round_id,
            "delta": self.delta,
            "epsilon_round": self.epsilon_round,
            "epsilon_total": self.epsilon_total,
            "epsilon_budget": self.epsilon_budget,
            "noise_multiplier": self.noise_multiplier,
        }


@dataclass
class PrivacyLedger:
    """One site's cumulative privacy spend, composed in RDP over integer orders."""

    site_id: str
    delta: float
    epsilon_budget: float
    charges: list[PrivacyCharge] = field(default_factory=list)

    def _rdp(self, charges: list[PrivacyCharge]) -> list[float]:
        total = [0.0] * len(DEFAULT_ORDERS)
        for charge in charges:
            curve = sampled_gaussian_rdp(
                charge.noise_multiplier, charge.sampling_rate, charge.steps, DEFAULT_ORDERS
            )
            total = [a + b for a, b in zip(total, curve, strict=True)]
        return total

    def epsilon(self) -> float:
        """Cumulative ε at this ledger's δ (0 before any release)."""
        if not self.charges:
            return 0.0
        return rdp_to_epsilon(self._rdp(self.charges), self.delta, DEFAULT_ORDERS)[0]

    def preview(self, charge: PrivacyCharge) -> PrivacyReport:
        """The report ``charge`` would produce, without recording it."""
        if any(existing.round_id == charge.round_id for existing in self.charges):
            raise PrivacyAccountingError(
                f"site {self.site_id!r} already released an update for round "
                f"{charge.round_id!r}; a second release would be charged twice"
            )
        epsilon_round = rdp_to_epsilon(self._rdp([charge]), self.delta, DEFAULT_ORDERS)[0]
        epsilon_total = rdp_to_epsilon(
            self._rdp([*self.charges, charge]), self.delta, DEFAULT_ORDERS
        )[0]
        return PrivacyReport(
            round_id=charge.round_id,
            delta=self.delta,
            epsilon_round=epsilon_round,
            epsilon_total=epsilon_total,
            epsilon_budget=self.epsilon_budget,
            noise_multiplier=charge.noise_multiplier,
        )

    def check(self, charge: PrivacyCharge) -> PrivacyReport:
        """The report for ``charge``; raise if it would exceed the budget. Records nothing."""
        report = self.preview(charge)
        if report.epsilon_total > self.epsilon_budget:
            raise PrivacyBudgetExceededError(
                f"site {self.site_id!r}: round {charge.round_id!r} would raise cumulative "
                f"ε to {report.epsilon_total:.4g} (δ={self.delta:g}), above the budget of "
                f"{self.epsilon_budget:g} (already spent ε={self.epsilon():.4g} over "
                f"{len(self.charges)} rounds); stop releasing updates for this site, or "
                "raise noise_multiplier or the budget deliberately"
            )
        return report

    def charge(self, charge: PrivacyCharge) -> PrivacyReport:
        """Record ``charge`` if the budget allows it, else raise and record nothing."""
        report = self.check(charge)
        self.charges.append(charge)
        return report

    def to_json(self) -> str:
        """Serialise the ledger (no secret content)."""
        return json.dumps(
            {
                "format": LEDGER_FORMAT,
                "site_id": self.site_id,
                "delta": self.delta,
                "epsilon_budget": self.epsilon_budget,
                "charges": [
                    {
                        "round_id": c.round_id,
                        "noise_multiplier": c.noise_multiplier,
                        "sampling_rate": c.sampling_rate,
                        "steps": c.steps,
                    }
                    for c in self.charges
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        """Parse :meth:`to_json` output."""
        try:
            document = json.loads(text)
            if document["format"] != LEDGER_FORMAT:
                raise ValueError(f"format is {document['format']!r}")
            ledger = cls(
                site_id=str(document["site_id"]),
                delta=float(document["delta"]),
                epsilon_budget=float(document["epsilon_budget"]),
                charges=[
                    PrivacyCharge(
                        round_id=str(c["round_id"]),
                        noise_multiplier=float(c["noise_multiplier"]),
                        sampling_rate=float(c["sampling_rate"]),
                        steps=int(c["steps"]),
                    )
                    for c in document["charges"]
                ],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PrivacyAccountingError(f"privacy ledger does not parse: {exc}") from exc
        return ledger

    @classmethod
    def for_site(cls, site_id: str, config: DPConfig) -> PrivacyLedger:
        """A fresh ledger for ``site_id`` with ``config``'s δ and budget."""
        return cls(site_id=site_id, delta=config.delta, epsilon_budget=config.epsilon_budget)

    def check_config(self, config: DPConfig) -> None:
        """Raise unless ``config`` uses this ledger's δ and budget."""
        if not math.isclose(config.delta, self.delta) or not math.isclose(
            config.epsilon_budget, self.epsilon_budget
        ):
            raise PrivacyAccountingError(
                f"site {self.site_id!r}: the DP config (δ={config.delta:g}, budget "
                f"{config.epsilon_budget:g}) differs from the ledger's (δ={self.delta:g}, "
                f"budget {self.epsilon_budget:g}); a budget cannot change silently"
            )


def add_gaussian_noise(values: FloatVector, std: float) -> FloatVector:
    """``values`` plus i.i.d. N(0, std²) noise from a CSPRNG-seeded generator."""
    if not math.isfinite(std) or std < 0:
        raise PrivacyAccountingError(f"noise std must be finite and non-negative, got {std}")
    generator = np.random.Generator(np.random.PCG64(secrets.randbits(256)))
    noised: FloatVector = values + generator.normal(0.0, std, size=values.shape)
    return noised
