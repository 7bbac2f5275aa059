"""Signed safety evaluations of a model: robot / VLA metrics an evaluator vouches for.

An evaluator runs a model (named by its digest) through a safety suite and reports
five metrics: collision-free rate, force-limit compliance, e-stop latency, workspace
adherence and task success. :func:`sign_evaluation` signs the RFC 8785 canonical JSON
of the :class:`SafetyEvaluation` with the evaluator's composite ML-DSA-65 + Ed25519 key
under the domain-separated context :data:`SIGNATURE_CONTEXT`, so the signature cannot
be replayed as any other TensorGuard signature (and vice versa).

:meth:`SignedSafetyEvaluation.verify` is called on every read and every use: the
signing key must be one of the trusted evaluator keys (by fingerprint), it must be the
key the evaluation names, and the composite signature must verify over the exact
canonical bytes. :func:`threshold_failures` compares verified metrics with thresholds.
No web framework or orchestrator is imported here.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tensorguard.codec import canonical_json
from tensorguard.crypto import CompositeSigner
from tensorguard.errors import TensorGuardError
from tensorguard.signed_statement import StatementKind, sign_statement, verify_signed_statement

EVALUATION_FORMAT: Final = "tensorguard.safety-evaluation/v1"
SIGNATURE_CONTEXT: Final = b"tensorguard/safety-evaluation/v1"
DIGEST_PATTERN = re.compile(r"^[0-9a-f]{64}$")

Rate = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
Digest = Annotated[str, Field(pattern=DIGEST_PATTERN.pattern)]
Label = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][\w.:@/-]*$")]


class SafetyEvaluationError(TensorGuardError):
    """A safety evaluation is malformed, untrusted or its signature does not verify."""


class UntrustedEvaluatorError(SafetyEvaluationError):
    """The evaluation is signed by a key that is not a trusted evaluator key."""


class SafetySignatureError(SafetyEvaluationError):
    """The evaluation's signature or public key is malformed or does not verify."""


class SafetyMetrics(BaseModel):
    """What the safety suite measured (rates are fractions of the episodes run)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    episodes: Annotated[int, Field(ge=1, le=2**31, strict=True)]
    collision_free_rate: Rate
    force_limit_compliance: Rate
    estop_latency_ms: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    workspace_adherence: Rate
    task_success_rate: Rate


class SafetyThresholds(BaseModel):
    """Minimum rates and the largest e-stop latency a passing evaluation must meet."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_episodes: Annotated[int, Field(ge=1, strict=True)]
    min_collision_free_rate: Rate
    min_force_limit_compliance: Rate
    max_estop_latency_ms: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    min_workspace_adherence: Rate
    min_task_success_rate: Rate


class SafetyEvaluation(BaseModel):
    """The signed statement: which model, which suite, who evaluated, what was measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["tensorguard.safety-evaluation/v1"] = EVALUATION_FORMAT
    model_digest: Digest
    suite: Label
    evaluator: Label
    evaluator_fingerprint: Digest
    evaluated_at: Annotated[str, Field(min_length=1, max_length=64)]
    metrics: SafetyMetrics

    def canonical_bytes(self) -> bytes:
        """The RFC 8785 canonical JSON that is signed."""
        return canonical_json(self.model_dump(mode="json"))


class SignedSafetyEvaluation(BaseModel):
    """An evaluation with the evaluator's composite public key and signature (base64)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    evaluation: SafetyEvaluation
    public_key: Annotated[str, Field(min_length=1, max_length=4096)]
    signature: Annotated[str, Field(min_length=1, max_length=8192)]

    @classmethod
    def parse(cls, document: object) -> SignedSafetyEvaluation:
        """Validate a mapping; raise :class:`SafetyEvaluationError` naming the problems."""
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or '(root)'}: {error['msg']}"
                for error in exc.errors()
            )
            raise SafetyEvaluationError(f"safety evaluation is malformed: {problems}") from exc

    def verify(self, trusted_fingerprints: Collection[str]) -> SafetyEvaluation:
        """Return the evaluation once its key is trusted and its signature verifies.

        Raises :class:`UntrustedEvaluatorError` when the key is not among
        ``trusted_fingerprints`` and :class:`SafetySignatureError` when the key or the
        signature is malformed or the signature does not verify.
        """
        verify_signed_statement(
            _EVALUATION_KIND,
            payload=self.evaluation.canonical_bytes(),
            context=SIGNATURE_CONTEXT,
            public_key=self.public_key,
            signature=self.signature,
            named_fingerprint=self.evaluation.evaluator_fingerprint,
            signer_label=self.evaluation.evaluator,
            trusted_fingerprints=trusted_fingerprints,
        )
        return self.evaluation


_EVALUATION_KIND = StatementKind(
    title="safety evaluation",
    noun="evaluation",
    signer_role="evaluator",
    untrusted_hint="a trusted evaluator key; an operator must enrol it first",
    signature_error=SafetySignatureError,
    untrusted_error=UntrustedEvaluatorError,
    error=SafetyEvaluationError,
    fingerprint_fix="set evaluator_fingerprint to the signing key's",
)


def sign_evaluation(
    evaluation: SafetyEvaluation, signer: CompositeSigner
) -> SignedSafetyEvaluation:
    """Sign ``evaluation`` with the evaluator's composite key (which it must name)."""
    public_key, signature = sign_statement(
        _EVALUATION_KIND,
        payload=evaluation.canonical_bytes(),
        context=SIGNATURE_CONTEXT,
        named_fingerprint=evaluation.evaluator_fingerprint,
        signer=signer,
    )
    return SignedSafetyEvaluation(evaluation=evaluation, public_key=public_key, signature=signature)


@dataclass(frozen=True)
class MetricComparison:
    """One safety metric against its threshold (``at_most``: an upper bound)."""

    metric: str
    observed: float
    threshold: float
    at_most: bool

    @property
    def passed(self) -> bool:
        """True when the observed value is within the threshold."""
        if self.at_most:
            return self.observed <= self.threshold
        return self.observed >= self.threshold

    @property
    def reason(self) -> str:
        """Why it passed or failed, with both numbers."""
        if self.at_most:
            relation = "is within the maximum" if self.passed else "exceeds the maximum"
        else:
            relation = (
                "meets the required minimum" if self.passed else "is below the required minimum"
            )
        return f"{self.metric} {self.observed:.6g} {relation} {self.threshold:.6g}"


def metric_comparisons(
    metrics: SafetyMetrics, thresholds: SafetyThresholds
) -> list[MetricComparison]:
    """Every metric against its threshold, in a fixed order (episodes first)."""
    return [
        MetricComparison(
            "episodes", float(metrics.episodes), float(thresholds.min_episodes), False
        ),
        MetricComparison(
            "collision_free_rate",
            metrics.collision_free_rate,
            thresholds.min_collision_free_rate,
            False,
        ),
        MetricComparison(
            "force_limit_compliance",
            metrics.force_limit_compliance,
            thresholds.min_force_limit_compliance,
            False,
        ),
        MetricComparison(
            "workspace_adherence",
            metrics.workspace_adherence,
            thresholds.min_workspace_adherence,
            False,
        ),
        MetricComparison(
            "task_success_rate", metrics.task_success_rate, thresholds.min_task_success_rate, False
        ),
        MetricComparison(
            "estop_latency_ms", metrics.estop_latency_ms, thresholds.max_estop_latency_ms, True
        ),
    ]


def threshold_failures(metrics: SafetyMetrics, thresholds: SafetyThresholds) -> list[str]:
    """One reason per metric that misses its threshold (empty when the evaluation passes)."""
    return [c.reason for c in metric_comparisons(metrics, thresholds) if not c.passed]
