"""Exception types raised by :mod:`tensorguard.gate`."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

from tensorguard.codec import describe_validation_error
from tensorguard.errors import ConfigurationError, TensorGuardError

ModelT = TypeVar("ModelT", bound=BaseModel)

__all__ = [
    "GateDecisionError",
    "GateError",
    "GateEvidenceError",
    "GatePolicyError",
    "describe_validation_error",
    "validate_or_raise",
]


class GateError(TensorGuardError):
    """Root of every deliberate failure in release-gate evaluation."""


class GatePolicyError(GateError, ConfigurationError):
    """A gate policy file is missing, unreadable or does not validate."""


class GateEvidenceError(GateError):
    """Evidence handed to the gate is malformed (not merely missing)."""


class GateDecisionError(GateError):
    """A serialised gate decision does not parse or its digests do not match."""


def validate_or_raise(
    model: type[ModelT], document: object, error: type[TensorGuardError], what: str, hint: str
) -> ModelT:
    """Validate ``document`` as ``model``; raise ``error`` naming every problem and a fix.

    pydantic's own error is not chained: its text repeats the input values, and a
    configuration document (an agent config) can hold secrets.
    """
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise error(f"{what}: {describe_validation_error(exc)}. {hint}") from None
