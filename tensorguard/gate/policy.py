"""The release-gate policy: a versioned, strictly validated YAML document.

A policy names every threshold a release must meet. Every threshold key must be
present; writing ``null`` disables that criterion explicitly (the decision then
records it as "not enforced by policy"), so a forgotten key can never silently
relax the gate. Unknown keys, duplicate keys and non-finite numbers are rejected.

Improvement and regression thresholds are either **absolute** (in loss units) or
**relative** (a fraction of the reference loss):

* improvement over base: ``base - global`` (absolute) or ``(base - global) / base``
  (relative); the criterion passes when the improvement is ``>= value``;
* regression vs the last release: ``global - last`` (absolute) or
  ``(global - last) / last`` (relative); the criterion passes when the regression is
  ``<= value``;
* pruned model vs the dense global adapter: ``pruned - global`` (absolute) or
  ``(pruned - global) / global`` (relative); within budget when ``<= value``.

Every deployable in the release package has its own threshold: the dense adapter
(``max_eval_loss``, ``min_improvement_over_base``, ``max_regression_vs_last_release``),
the 2:4-pruned model (``max_pruned_loss_increase``, ``min_sparsity``), the ONNX export
(``max_onnx_abs_diff``) and the MOAI export (``max_moai_self_check_error``). A pruned
model over its loss budget is handled as ``pruned_over_budget`` says: ``exclude`` ships
the package without it (the decision names it as excluded), ``fail`` fails the gate.

The optional ``canary`` section (:mod:`tensorguard.gate.canary_policy`) sizes the canary
cohort of a passed release and holds the telemetry thresholds that promote it or roll
it back; without it a release goes to every node at once. The optional ``safety``
section (:mod:`tensorguard.gate.safety_policy`) requires a passing safety evaluation of
the round's model, signed by a trusted evaluator key. The optional
``disclose_site_ids: true`` lets the release's model card name the contributing sites;
absent (or false), the card gives only their number.

The policy digest is the SHA-256 of the RFC 8785 canonical JSON of the validated
policy, so it identifies the rules in force independently of YAML formatting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from tensorguard.codec import CodecError, load_strict_yaml
from tensorguard.gate.canary_policy import CanaryPolicy
from tensorguard.gate.canonical_model import CanonicalModel
from tensorguard.gate.errors import GatePolicyError, validate_or_raise
from tensorguard.gate.safety_policy import SafetyPolicy

DEFAULT_POLICY_FILE = Path(__file__).with_name("default_policy.yaml")
"""The policy shipped with TensorGuard (tensorguard/gate/default_policy.yaml)."""
CHECK_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class LossDelta(BaseModel):
    """A loss difference threshold, absolute (loss units) or relative (a fraction)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["absolute", "relative"]
    value: FiniteFloat


class RegressionLimit(LossDelta):
    """The largest allowed loss increase over a reference loss (``value >= 0``)."""

    value: NonNegativeFloat


PrunedOverBudget = Literal["exclude", "fail"]
"""What a pruned model over its loss budget does: leave the package, or fail the gate."""


class GatePolicy(CanonicalModel):
    """Thresholds a release must meet; see the module docstring for their meaning."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    omitted_when_absent: ClassVar[tuple[str, ...]] = ("safety", "disclose_site_ids")

    policy_version: Annotated[int, Field(ge=1, strict=True)]
    description: str = ""
    max_eval_loss: NonNegativeFloat | None
    min_improvement_over_base: LossDelta | None
    max_regression_vs_last_release: RegressionLimit | None
    max_onnx_abs_diff: NonNegativeFloat | None
    min_sparsity: Fraction | None
    max_pruned_loss_increase: RegressionLimit | None
    pruned_over_budget: PrunedOverBudget
    max_moai_self_check_error: NonNegativeFloat | None
    required_checks: tuple[str, ...]
    canary: CanaryPolicy | None = None  # absent: no canary stage (tensorguard.gate.canary_policy)
    safety: SafetyPolicy | None = None  # absent: no safety evaluation required
    # true: the release's model card names the contributing sites; absent or false: only
    # their number (tensorguard.model_card)
    disclose_site_ids: bool | None = None

    @field_validator("required_checks")
    @classmethod
    def _check_names_are_valid_and_unique(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        for name in names:
            if not CHECK_NAME_PATTERN.fullmatch(name):
                raise ValueError(
                    f"check name {name!r} must start with a letter or digit and use only "
                    "letters, digits and _ . : / - (at most 128 characters)"
                )
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"required_checks lists {duplicates} more than once")
        return names

    @model_validator(mode="after")
    def _enforces_something(self) -> GatePolicy:
        thresholds = (
            self.max_eval_loss,
            self.min_improvement_over_base,
            self.max_regression_vs_last_release,
            self.max_onnx_abs_diff,
            self.min_sparsity,
            self.max_pruned_loss_increase,
            self.max_moai_self_check_error,
        )
        if all(value is None for value in thresholds) and not self.required_checks:
            raise ValueError(
                "the policy enforces nothing (every threshold is null and no check is "
                "required); a gate that passes everything is refused"
            )
        return self


def parse_policy(document: object, source: str = "policy") -> GatePolicy:
    """Validate an already-parsed policy document; raise :class:`GatePolicyError` if invalid."""
    if not isinstance(document, dict):
        raise GatePolicyError(
            f"{source}: a gate policy must be a mapping of settings, got {type(document).__name__}"
        )
    return validate_or_raise(
        GatePolicy,
        document,
        GatePolicyError,
        f"{source} is not a valid gate policy",
        "Fix the file; every threshold key is required (write null to disable one) and "
        "unknown keys are rejected",
    )


def load_policy(path: Path) -> GatePolicy:
    """Read and validate a YAML gate policy file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GatePolicyError(
            f"cannot read gate policy {path}: {exc.strerror or exc}; check the configured "
            "policy path"
        ) from exc
    except UnicodeDecodeError as exc:
        raise GatePolicyError(
            f"gate policy {path} is not UTF-8 text (byte {exc.start}: {exc.reason}); save "
            "it as UTF-8"
        ) from None
    try:
        document = load_strict_yaml(text, what=f"gate policy {path}")
    except CodecError as exc:
        raise GatePolicyError(f"{exc}; fix the file (each key may appear once)") from exc
    return parse_policy(document, source=str(path))
