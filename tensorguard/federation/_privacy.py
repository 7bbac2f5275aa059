"""Differential privacy for site updates: the round's DP rule, noise, and a budget ledger.

Distributed DP. The coordinator fixes a :class:`DPRule` in the signed round spec: a
central noise multiplier ``σ``, a target ``δ`` and a per-site ε budget. Every site
clips its delta to the round's L2 bound ``C``, weights it (weight ≤ 1 after dividing
by the round's ``max_site_weight``, so a site's contribution still has norm ≤ ``C``)
and adds independent Gaussian noise of standard deviation ``σ·C/√k`` to every
coordinate, where ``k`` is the round's quorum (``min_sites``). The custodian only ever
decrypts the sum of at least ``k`` updates; the sum of ``k'`` ≥ ``k`` independent
``N(0, σ²C²/k)`` draws is ``N(0, k'/k · σ²C²)``, at least the ``N(0, σ²C²)`` of the
central Gaussian mechanism with sensitivity ``C`` under add/remove-one-site
adjacency. Each round is therefore charged as one run of that mechanism, with
multiplier ``σ`` and no subsampling amplification (every round counts, whether or
not the site's update makes it into the sum).

This guarantee is for the decrypted *sum*, and assumes the other sites of the
quorum add their noise honestly. An update decrypted alone (custodian and aggregator
colluding) carries only ``σ/√k`` of noise multiplier.

The :class:`PrivacyLedger` composes these runs in RDP across rounds and refuses,
before any noise is drawn or anything is released, a round that would push the
site's cumulative ε past its budget.

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
from typing import Annotated, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tensorguard.codec import CodecError, StrictModel, parse_json_object, validate_model
from tensorguard.federation._accountant import DEFAULT_ORDERS, gaussian_rdp, rdp_to_epsilon
from tensorguard.federation._errors import PrivacyAccountingError, PrivacyBudgetExceededError
from tensorguard.federation._layout import FloatVector

LedgerFormat = Literal["tensorguard.federation.privacy-ledger/v1"]
LEDGER_FORMAT: str = get_args(LedgerFormat)[0]


class DPRule(BaseModel):
    """A round's differential-privacy rule, fixed by the coordinator in the round spec.

    ``noise_multiplier`` is the *central* σ: the Gaussian noise in the decrypted sum
    has standard deviation at least ``σ·C`` (``C``: the round's clip norm). Each site
    adds its share, ``σ·C/√k`` (:meth:`site_noise_std`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    noise_multiplier: float = Field(
        gt=0, description="Central noise std of the summed update divided by the clip norm."
    )
    delta: float = Field(gt=0, lt=1, description="Target δ of the (ε, δ) guarantee.")
    epsilon_budget: float = Field(gt=0, description="Cumulative ε each site may spend.")

    @field_validator("noise_multiplier", "epsilon_budget")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("noise_multiplier and epsilon_budget must be finite")
        return value

    def site_noise_std(self, clip_norm: float, min_sites: int) -> float:
        """Each site's noise std ``σ·C/√k``: the sum of ``k`` such draws has std ``σ·C``."""
        if not (math.isfinite(clip_norm) and clip_norm > 0) or min_sites < 1:
            raise PrivacyAccountingError(
                f"the site noise needs a positive clip norm and quorum, got clip_norm="
                f"{clip_norm}, min_sites={min_sites}"
            )
        return self.noise_multiplier * clip_norm / math.sqrt(min_sites)


DPConfig = DPRule
"""A site's DP settings: the same model as the round's rule, which they must equal."""


@dataclass(frozen=True)
class PrivacyCharge:
    """One round's run of the central Gaussian mechanism (multiplier σ, no sampling)."""

    round_id: str
    noise_multiplier: float
    steps: int = 1


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


class _ChargeDocument(StrictModel):
    """One charge of a stored ledger (:meth:`PrivacyLedger.to_json`)."""

    round_id: Annotated[str, Field(min_length=1)]
    noise_multiplier: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    steps: Annotated[int, Field(ge=1)]
    sampling_rate: Annotated[float, Field(allow_inf_nan=False)] | None = None
    """Only in ledgers written before sampling was removed; must be 1 (checked on load)."""


class _LedgerDocument(StrictModel):
    """A stored privacy ledger exactly as :meth:`PrivacyLedger.to_json` writes it."""

    format: LedgerFormat
    site_id: Annotated[str, Field(min_length=1)]
    delta: Annotated[float, Field(gt=0, lt=1)]
    epsilon_budget: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    charges: list[_ChargeDocument]


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
            curve = gaussian_rdp(charge.noise_multiplier, charge.steps, DEFAULT_ORDERS)
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
                        "steps": c.steps,
                    }
                    for c in self.charges
                ],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> PrivacyLedger:
        """Parse :meth:`to_json` output.

        Ledgers written before sampling was removed carry ``sampling_rate`` per charge;
        they parse when it is 1 (the only rate ever implemented) and are refused
        otherwise, since a rate below 1 under-reported ε for updates sent every round.
        """
        try:
            document = parse_json_object(text, what="privacy ledger")
            parsed = validate_model(_LedgerDocument, document, what="privacy ledger")
        except CodecError as exc:
            raise PrivacyAccountingError(
                f"{exc}; a ledger that does not parse cannot account ε: restore it from its "
                "backup before releasing further updates"
            ) from None
        return cls(
            site_id=parsed.site_id,
            delta=parsed.delta,
            epsilon_budget=parsed.epsilon_budget,
            charges=[_charge(charge) for charge in parsed.charges],
        )

    @classmethod
    def for_site(cls, site_id: str, rule: DPRule) -> PrivacyLedger:
        """A fresh ledger for ``site_id`` with ``rule``'s δ and budget."""
        return cls(site_id=site_id, delta=rule.delta, epsilon_budget=rule.epsilon_budget)

    def check_config(self, rule: DPRule) -> None:
        """Raise unless ``rule`` uses this ledger's δ and budget."""
        if not math.isclose(rule.delta, self.delta) or not math.isclose(
            rule.epsilon_budget, self.epsilon_budget
        ):
            raise PrivacyAccountingError(
                f"site {self.site_id!r}: the round's DP rule (δ={rule.delta:g}, budget "
                f"{rule.epsilon_budget:g}) differs from the ledger's (δ={self.delta:g}, "
                f"budget {self.epsilon_budget:g}); a budget cannot change silently"
            )


def _charge(document: _ChargeDocument) -> PrivacyCharge:
    """One ledger charge; an old ``sampling_rate`` must be exactly 1."""
    rate = document.sampling_rate
    if rate is not None and rate != 1.0:
        raise PrivacyAccountingError(
            f"privacy ledger charge for round {document.round_id!r} records "
            f"sampling_rate={rate}, but no site sampling was ever implemented: every "
            "round was released, so that charge under-reports ε. Rebuild the ledger "
            "with one charge per released round at sampling rate 1 (the same rounds "
            "and noise multipliers) before releasing further updates"
        )
    return PrivacyCharge(document.round_id, document.noise_multiplier, document.steps)


def add_gaussian_noise(values: FloatVector, std: float) -> FloatVector:
    """``values`` plus i.i.d. N(0, std²) noise from a CSPRNG-seeded generator."""
    if not math.isfinite(std) or std < 0:
        raise PrivacyAccountingError(f"noise std must be finite and non-negative, got {std}")
    generator = np.random.Generator(np.random.PCG64(secrets.randbits(256)))
    noised: FloatVector = values + generator.normal(0.0, std, size=values.shape)
    return noised
