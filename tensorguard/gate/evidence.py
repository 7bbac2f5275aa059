"""Evidence the gate judges: evaluation losses (base, global adapter, pruned model), ONNX
parity, the MOAI self-check's outcome against its error bound, sparsity and check
results; and, for a policy with a ``safety`` section, the round's model digest and a
signed safety evaluation of it.

Every field is optional in the model so that an incomplete evidence set can still be
judged: a missing piece of evidence that the policy needs fails the gate with a reason
naming it (fail closed). Values that are present must be well formed (finite, in
range); malformed values raise :class:`~tensorguard.gate.errors.GateEvidenceError`.

The MOAI self-check is recorded as :class:`MoaiSelfCheck` (its error bound and whether
the measured error stayed within it), not as the measured error: that comes from a fresh
CKKS encryption and differs from build to build, while the decision, shipped in every
release package, must be byte-reproducible (docs/REPRODUCIBILITY.md §4).

Whether a previous release exists is stated explicitly: ``last_release`` is either a
:class:`PreviousRelease` (its version and eval loss) or :class:`FirstRelease` (the
channel has never been published). Leaving it unset is missing evidence, not a first
release.
"""

from __future__ import annotations

import math
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tensorguard.gate.canonical_model import CanonicalModel
from tensorguard.gate.errors import GateEvidenceError, validate_or_raise
from tensorguard.gate.policy import CHECK_NAME_PATTERN
from tensorguard.safety_evaluation import Digest, SignedSafetyEvaluation

Loss = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class PreviousRelease(BaseModel):
    """The last published release on the channel and its loss on the same held-out set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["previous_release"] = "previous_release"
    version: Annotated[int, Field(ge=1)]
    eval_loss: Loss


class FirstRelease(BaseModel):
    """An explicit statement that nothing was published on the channel before."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["first_release"] = "first_release"


LastRelease = Annotated[PreviousRelease | FirstRelease, Field(discriminator="kind")]


class MoaiSelfCheck(BaseModel):
    """The MOAI export's CKKS self-check as the gate records it: ``error_bound``, the
    tolerance the measured CKKS-vs-plaintext error was checked against (a setting of the
    export, so the same in every build), and ``within_bound``, whether it held.

    The measured error itself stays out of the evidence (it is recorded on the
    ``moai_export`` asset and its ``moai_self_check`` check): it depends on the
    encryption's randomness, and the decision must not."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    error_bound: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    within_bound: bool

    @classmethod
    def from_measurement(cls, max_abs_error: float, error_bound: float) -> MoaiSelfCheck:
        """The record of a self-check that measured ``max_abs_error`` against
        ``error_bound``; raise :class:`GateEvidenceError` for a negative or non-finite
        error or a bound that is not a positive finite number."""
        if not (math.isfinite(max_abs_error) and max_abs_error >= 0.0):
            raise GateEvidenceError(
                f"the MOAI self-check error {max_abs_error!r} is not a finite non-negative "
                "number; re-materialise moai_export"
            )
        return validate_or_raise(
            cls,
            {"error_bound": error_bound, "within_bound": max_abs_error <= error_bound},
            GateEvidenceError,
            "the MOAI self-check bound is malformed",
            "Set moai_export's self_check_tolerance to a positive finite number",
        )


class GateEvidence(CanonicalModel):
    """Measured facts about a release candidate; see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    omitted_when_absent: ClassVar[tuple[str, ...]] = ("model_digest", "safety_evaluation")

    eval_loss_global: Loss | None = None
    eval_loss_base: Loss | None = None
    eval_loss_pruned: Loss | None = None
    last_release: LastRelease | None = None
    onnx_max_abs_diff: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    sparsity: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = None
    moai_self_check: MoaiSelfCheck | None = None
    checks: dict[str, bool] = Field(default_factory=dict)
    model_digest: Digest | None = None
    safety_evaluation: SignedSafetyEvaluation | None = None

    @classmethod
    def parse(cls, document: object) -> GateEvidence:
        """Validate a mapping of evidence; raise :class:`GateEvidenceError` if malformed."""
        return validate_or_raise(
            cls,
            document,
            GateEvidenceError,
            "gate evidence is malformed",
            "Losses and differences must be finite and non-negative, sparsity in [0, 1]",
        )

    @field_validator("checks")
    @classmethod
    def _check_names_are_valid(cls, checks: dict[str, bool]) -> dict[str, bool]:
        bad_names = sorted(name for name in checks if not CHECK_NAME_PATTERN.fullmatch(name))
        if bad_names:
            raise ValueError(f"invalid check names {bad_names}")
        return checks
