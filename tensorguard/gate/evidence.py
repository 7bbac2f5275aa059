"""Evidence the gate judges: evaluation losses (base, global adapter, pruned model), ONNX
parity, MOAI self-check error, sparsity and check results; and, for a policy with a
``safety`` section, the round's model digest and a signed safety evaluation of it.

Every field is optional in the model so that an incomplete evidence set can still be
judged: a missing piece of evidence that the policy needs fails the gate with a reason
naming it (fail closed). Values that are present must be well formed (finite, in
range); malformed values raise :class:`~tensorguard.gate.errors.GateEvidenceError`.

Whether a previous release exists is stated explicitly: ``last_release`` is either a
:class:`PreviousRelease` (its version and eval loss) or :class:`FirstRelease` (the
channel has never been published). Leaving it unset is missing evidence, not a first
release.
"""

from __future__ import annotations

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
    moai_self_check_max_abs_error: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = (
        None
    )
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
