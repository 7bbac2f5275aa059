"""The ``safety`` section of the gate policy: a passing, verified safety evaluation.

With this section a release passes only when the evidence carries a safety evaluation
(:mod:`tensorguard.safety_evaluation`) of the round's model digest that is signed by
one of ``trusted_evaluators`` (composite key fingerprints), whose signature verifies,
and whose metrics meet every threshold. Without the section no evaluation is required.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from tensorguard.safety_evaluation import Digest, SafetyThresholds


class SafetyPolicy(SafetyThresholds):
    """Thresholds plus the evaluator keys whose evaluations the gate accepts."""

    trusted_evaluators: Annotated[tuple[Digest, ...], Field(min_length=1)]

    @field_validator("trusted_evaluators")
    @classmethod
    def _unique(cls, fingerprints: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(fingerprints)) != len(fingerprints):
            raise ValueError("trusted_evaluators lists a fingerprint more than once")
        return fingerprints
