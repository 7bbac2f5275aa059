"""Strict pydantic models for the headers and records inside TensorGuard's binary formats.

Part of :mod:`tensorguard.codec` (which re-exports every name here); kept in its own
module so that importing the codec for canonical JSON alone does not import pydantic.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tensorguard.codec import SchemaError

__all__ = ["ModelT", "StrictModel", "describe_validation_error", "validate_model"]


class StrictModel(BaseModel):
    """Base of the header and record models: no unknown fields, no coercion, immutable.

    ``strict=True`` means a JSON ``true`` is not an integer, ``"3"`` is not a number and
    ``1`` is not a string; a field that must be converted from its JSON form (a
    timestamp, an enum, a tensor layout) says so with its own validator.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


ModelT = TypeVar("ModelT", bound=BaseModel)


def describe_validation_error(exc: ValidationError) -> str:
    """One ``field.path: message`` per pydantic problem, joined by ``; ``.

    Only the location and pydantic's message are used, never the offending input, so a
    secret in a malformed document does not reach an exception or a log.
    """
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(document)'}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )


def validate_model(model: type[ModelT], document: object, *, what: str) -> ModelT:
    """Validate a parsed document against ``model``; raise :class:`SchemaError` naming
    ``what`` and every bad field (without the offending values)."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        raise SchemaError(
            f"{what} does not match its schema: {describe_validation_error(exc)}"
        ) from None
