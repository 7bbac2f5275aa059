"""Judge evidence against a policy and record the result as a canonical decision.

:func:`evaluate_gate` returns a :class:`GateDecision`: one :class:`CriterionResult` per
criterion with a specific, human-readable reason, the overall verdict, and the digests
of the policy and evidence it was computed from. The decision is deterministic (no
clock), so the same policy and evidence always give the same canonical bytes and the
same digest; that digest is what the TGSP manifest records.

The gate fails closed: a criterion the policy enforces but whose evidence is missing
fails, naming the missing evidence.

A deployable the policy lets go rather than fail (a pruned model over its loss budget
under ``pruned_over_budget: exclude``) gets the status ``excluded``: it does not block,
and :attr:`GateDecision.excluded` names what the release package must leave out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from tensorguard.gate.canonical_model import CanonicalModel
from tensorguard.gate.errors import GateDecisionError, describe_validation_error
from tensorguard.gate.evidence import FirstRelease, GateEvidence
from tensorguard.gate.policy import GatePolicy, LossDelta
from tensorguard.safety_evaluation import SafetyEvaluationError, metric_comparisons

DECISION_FORMAT: Final = "tensorguard.gate-decision/v3"
"""v2 added ``excluded``; v3 records the MOAI self-check as its bound and outcome
(:class:`~tensorguard.gate.evidence.MoaiSelfCheck`) instead of the measured error."""
PRUNED_MODEL: Final = "pruned_model"
"""The deployable (package entry) that ``pruned_over_budget: exclude`` leaves out."""
MOAI_SELF_CHECK: Final = "moai_self_check"
BOUND_CRITERIA: Final = frozenset({MOAI_SELF_CHECK})
"""Criteria whose ``observed`` value is an upper bound the measurement was shown to stay
within, not the measurement itself (the model card writes it as ``≤ value``)."""
SAFETY_METRIC_PREFIX: Final = "safety_"
"""Names of the per-metric rows that follow a verified safety evaluation's criterion."""

Status = Literal["passed", "failed", "not_enforced", "excluded"]


class CriterionResult(BaseModel):
    """The outcome of one criterion.

    ``blocking`` is true when a failure of this criterion fails the gate (thresholds the
    policy sets and checks it requires); checks reported but not required, and
    thresholds the policy disables, are recorded with ``blocking`` false. ``excludes``
    names the deployable an ``excluded`` criterion leaves out of the package.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    status: Status
    blocking: bool
    observed: float | bool | None
    threshold: float | None
    reason: str
    excludes: str | None = None


class GateDecision(CanonicalModel):
    """The gate verdict, its per-criterion reasons, and what it was computed from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["tensorguard.gate-decision/v3"] = DECISION_FORMAT
    passed: bool
    excluded: tuple[str, ...]
    policy_version: int
    policy_digest: str
    evidence_digest: str
    criteria: tuple[CriterionResult, ...]
    policy: GatePolicy
    evidence: GateEvidence

    @property
    def reasons(self) -> list[str]:
        """Every criterion's reason, passed and failed, in evaluation order."""
        return [criterion.reason for criterion in self.criteria]

    @property
    def failures(self) -> list[str]:
        """The reasons of the blocking criteria that failed (empty when the gate passed)."""
        return [
            criterion.reason
            for criterion in self.criteria
            if criterion.blocking and criterion.status == "failed"
        ]

    @classmethod
    def from_json(cls, data: bytes | str) -> GateDecision:
        """Parse a serialised decision and re-derive it from its own policy and evidence.

        Raises :class:`GateDecisionError` when the document does not validate or when
        its verdict, reasons or digests differ from a fresh evaluation, so an edited
        decision cannot pass for a genuine one.
        """
        try:
            claimed = cls.model_validate_json(data)
        except ValidationError as exc:
            raise GateDecisionError(
                f"gate decision does not parse: {describe_validation_error(exc)}"
            ) from exc
        recomputed = evaluate_gate(claimed.policy, claimed.evidence)
        if recomputed != claimed:
            raise GateDecisionError(
                "gate decision is inconsistent with its own policy and evidence (verdict, "
                "reasons or digests differ from a fresh evaluation); it was edited or "
                "produced by an incompatible gate version"
            )
        return claimed


def _fmt(value: float) -> str:
    return f"{value:.6g}"


def _result(
    name: str,
    passed: bool,
    observed: float | bool | None,
    threshold: float | None,
    detail: str,
    *,
    blocking: bool = True,
) -> CriterionResult:
    status: Status = "passed" if passed else "failed"
    return CriterionResult(
        name=name,
        status=status,
        blocking=blocking,
        observed=observed,
        threshold=threshold,
        reason=f"{name}: {status.upper()}: {detail}",
    )


def _not_enforced(name: str, setting: str) -> CriterionResult:
    return CriterionResult(
        name=name,
        status="not_enforced",
        blocking=False,
        observed=None,
        threshold=None,
        reason=f"{name}: NOT ENFORCED: policy sets {setting} to null",
    )


def _missing(name: str, evidence_field: str, threshold: float | None) -> CriterionResult:
    return _result(
        name,
        False,
        None,
        threshold,
        f"evidence {evidence_field} is missing, so the gate fails closed; produce it before gating",
    )


def _compare(
    name: str, subject: str, observed: float, threshold: float, *, at_most: bool
) -> CriterionResult:
    """Compare against an upper (``at_most``) or lower bound and say which way it went."""
    if at_most:
        passed = observed <= threshold
        relation = "is within the maximum" if passed else "exceeds the maximum"
    else:
        passed = observed >= threshold
        relation = "meets the required minimum" if passed else "is below the required minimum"
    detail = f"{subject} {_fmt(observed)} {relation} {_fmt(threshold)}"
    return _result(name, passed, observed, threshold, detail)


@dataclass(frozen=True)
class _Bound:
    """A criterion comparing one evidence value with one policy threshold (by field name)."""

    name: str
    setting: str
    evidence_field: str
    subject: str
    at_most: bool

    def __call__(self, policy: GatePolicy, evidence: GateEvidence) -> list[CriterionResult]:
        threshold: float | None = getattr(policy, self.setting)
        observed: float | None = getattr(evidence, self.evidence_field)
        if threshold is None:
            return [_not_enforced(self.name, self.setting)]
        if observed is None:
            return [_missing(self.name, self.evidence_field, threshold)]
        return [_compare(self.name, self.subject, observed, threshold, at_most=self.at_most)]


_eval_loss = _Bound(
    "eval_loss", "max_eval_loss", "eval_loss_global", "global eval loss", at_most=True
)
_onnx_parity = _Bound(
    "onnx_parity",
    "max_onnx_abs_diff",
    "onnx_max_abs_diff",
    "largest absolute ONNX-vs-torch output difference",
    at_most=True,
)
_sparsity = _Bound("sparsity", "min_sparsity", "sparsity", "measured sparsity", at_most=False)


def _moai_self_check(policy: GatePolicy, evidence: GateEvidence) -> list[CriterionResult]:
    """The MOAI self-check's error bound against the policy's maximum; the criterion's
    ``observed`` value is that bound (see :data:`BOUND_CRITERIA`), and a self-check whose
    measured error exceeded its bound fails with no observed value."""
    name, threshold = MOAI_SELF_CHECK, policy.max_moai_self_check_error
    if threshold is None:
        return [_not_enforced(name, "max_moai_self_check_error")]
    check = evidence.moai_self_check
    if check is None:
        return [_missing(name, "moai_self_check", threshold)]
    bound = _fmt(check.error_bound)
    if not check.within_bound:
        detail = (
            f"the MOAI self-check measured a CKKS-vs-plaintext error above its bound {bound}, "
            f"so the error is not shown to be within the maximum {_fmt(threshold)}"
        )
        return [_result(name, False, None, threshold, detail)]
    if check.error_bound <= threshold:
        detail = (
            f"CKKS-vs-plaintext error of the MOAI self-check is at most its bound {bound}, "
            f"within the maximum {_fmt(threshold)}"
        )
        return [_result(name, True, check.error_bound, threshold, detail)]
    detail = (
        f"the MOAI self-check's bound {bound} exceeds the maximum {_fmt(threshold)}: the "
        f"self-check cannot show the error is that small; set moai_export's "
        f"self_check_tolerance to at most {_fmt(threshold)}"
    )
    return [_result(name, False, check.error_bound, threshold, detail)]


def _loss_change(
    name: str,
    rule: LossDelta,
    loss: tuple[str, float | None],
    reference: tuple[str, float | None],
    what: str,
) -> float | CriterionResult:
    """``loss - reference`` (absolute) or ``(loss - reference) / reference`` (relative),
    each given as (evidence field, value); or the failed result when evidence is
    missing or a relative change is undefined (reference 0)."""
    for field, value in (loss, reference):
        if value is None:
            return _missing(name, field, rule.value)
    loss_value, reference_value = float(loss[1] or 0.0), float(reference[1] or 0.0)
    if rule.mode == "relative" and reference_value == 0.0:
        detail = f"relative {what} is undefined because {reference[0]} is 0"
        return _result(name, False, None, rule.value, detail)
    change = loss_value - reference_value
    return change if rule.mode == "absolute" else change / reference_value


def _improvement_over_base(policy: GatePolicy, evidence: GateEvidence) -> list[CriterionResult]:
    name, rule = "improvement_over_base", policy.min_improvement_over_base
    if rule is None:
        return [_not_enforced(name, "min_improvement_over_base")]
    loss, base = evidence.eval_loss_global, evidence.eval_loss_base
    change = _loss_change(
        name, rule, ("eval_loss_global", loss), ("eval_loss_base", base), "improvement"
    )
    if isinstance(change, CriterionResult):
        return [change]
    subject = f"global eval loss {_fmt(loss or 0.0)} vs base {_fmt(base or 0.0)}"
    return [
        _compare(name, f"{subject}: {rule.mode} improvement", -change, rule.value, at_most=False)
    ]


def _regression_vs_last_release(
    policy: GatePolicy, evidence: GateEvidence
) -> list[CriterionResult]:
    name, rule = "regression_vs_last_release", policy.max_regression_vs_last_release
    if rule is None:
        return [_not_enforced(name, "max_regression_vs_last_release")]
    last = evidence.last_release
    if last is None:
        return [_missing(name, "last_release", rule.value)]
    if isinstance(last, FirstRelease):
        detail = "first release on this channel; there is no previous release to regress from"
        return [_result(name, True, None, rule.value, detail)]
    loss = evidence.eval_loss_global
    if loss is None:
        return [_missing(name, "eval_loss_global", rule.value)]
    if rule.mode == "relative" and last.eval_loss == 0.0:
        detail = f"relative regression is undefined because release {last.version} has eval loss 0"
        return [_result(name, False, None, rule.value, detail)]
    delta = loss - last.eval_loss
    regression = delta if rule.mode == "absolute" else delta / last.eval_loss
    subject = (
        f"global eval loss {_fmt(loss)} vs release {last.version} at {_fmt(last.eval_loss)}: "
        f"{rule.mode} regression"
    )
    return [_compare(name, subject, regression, rule.value, at_most=True)]


def _pruned_loss_increase(policy: GatePolicy, evidence: GateEvidence) -> list[CriterionResult]:
    """The pruned model's loss increase over the dense global adapter, against its budget;
    over budget it fails the gate or is excluded from the package, as the policy says."""
    name, rule = "pruned_loss_increase", policy.max_pruned_loss_increase
    if rule is None:
        return [_not_enforced(name, "max_pruned_loss_increase")]
    pruned, dense = evidence.eval_loss_pruned, evidence.eval_loss_global
    increase = _loss_change(
        name, rule, ("eval_loss_pruned", pruned), ("eval_loss_global", dense), "increase"
    )
    if isinstance(increase, CriterionResult):
        return [increase]
    subject = (
        f"pruned eval loss {_fmt(pruned or 0.0)} vs dense global {_fmt(dense or 0.0)}: "
        f"{rule.mode} increase"
    )
    result = _compare(name, subject, increase, rule.value, at_most=True)
    if result.status == "passed" or policy.pruned_over_budget == "fail":
        return [result]
    detail = (
        f"{subject} {_fmt(increase)} exceeds the maximum {_fmt(rule.value)}; "
        f"{PRUNED_MODEL} is left out of the package (policy pruned_over_budget: exclude)"
    )
    return [
        CriterionResult(
            name=name,
            status="excluded",
            blocking=False,
            observed=increase,
            threshold=rule.value,
            reason=f"{name}: EXCLUDED: {detail}",
            excludes=PRUNED_MODEL,
        )
    ]


def _checks(policy: GatePolicy, evidence: GateEvidence) -> list[CriterionResult]:
    results = []
    for check in policy.required_checks:
        name = f"check:{check}"
        outcome = evidence.checks.get(check)
        if outcome is None:
            results.append(_missing(name, f"checks[{check!r}]", None))
        else:
            detail = "required check passed" if outcome else "required check failed"
            results.append(_result(name, outcome, outcome, None, detail))
    for check in sorted(set(evidence.checks) - set(policy.required_checks)):
        outcome = evidence.checks[check]
        detail = f"check {'passed' if outcome else 'failed'}; recorded, not required by policy"
        results.append(_result(f"check:{check}", outcome, outcome, None, detail, blocking=False))
    return results


def _safety_evaluation(policy: GatePolicy, evidence: GateEvidence) -> list[CriterionResult]:
    """A verified evaluation of this model by a trusted evaluator that meets every threshold
    (only when the policy has a ``safety`` section; the signature is checked here, on use)."""
    name, rule = "safety_evaluation", policy.safety
    if rule is None:
        return []
    if evidence.model_digest is None:
        return [_missing(name, "model_digest", None)]
    if evidence.safety_evaluation is None:
        return [_missing(name, "safety_evaluation", None)]
    try:
        evaluation = evidence.safety_evaluation.verify(rule.trusted_evaluators)
    except SafetyEvaluationError as exc:
        return [_result(name, False, False, None, f"the safety evaluation is refused: {exc}")]
    if evaluation.model_digest != evidence.model_digest:
        detail = (
            f"the safety evaluation is of model {evaluation.model_digest[:16]}, not of this "
            f"round's model {evidence.model_digest[:16]}"
        )
        return [_result(name, False, False, None, detail)]
    comparisons = metric_comparisons(evaluation.metrics, rule)
    failures = [c.reason for c in comparisons if not c.passed]
    who = f"evaluation by {evaluation.evaluator!r} ({evaluation.suite!r}) verified"
    if failures:
        verdict = _result(name, False, False, None, f"{who}; " + "; ".join(failures))
    else:
        verdict = _result(name, True, True, None, f"{who}; every safety threshold met")
    # one recorded row per metric (the verdict above is what blocks)
    per_metric = [
        _result(
            f"{SAFETY_METRIC_PREFIX}{c.metric}",
            c.passed,
            c.observed,
            c.threshold,
            f"{c.reason}; recorded, the safety_evaluation criterion decides",
            blocking=False,
        )
        for c in comparisons
    ]
    return [verdict, *per_metric]


CRITERIA: tuple[Callable[[GatePolicy, GateEvidence], list[CriterionResult]], ...] = (
    _eval_loss,
    _improvement_over_base,
    _regression_vs_last_release,
    _pruned_loss_increase,
    _sparsity,
    _onnx_parity,
    _moai_self_check,
    _checks,
    _safety_evaluation,
)


def evaluate_gate(policy: GatePolicy, evidence: GateEvidence) -> GateDecision:
    """Judge ``evidence`` against ``policy``; pass only if no blocking criterion fails."""
    criteria = tuple(result for criterion in CRITERIA for result in criterion(policy, evidence))
    passed = not any(c.blocking and c.status == "failed" for c in criteria)
    excluded = tuple(sorted({c.excludes for c in criteria if c.excludes is not None}))
    return GateDecision(
        passed=passed,
        excluded=excluded,
        policy_version=policy.policy_version,
        policy_digest=policy.digest(),
        evidence_digest=evidence.digest(),
        criteria=criteria,
        policy=policy,
        evidence=evidence,
    )
