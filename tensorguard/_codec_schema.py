"""Strict pydantic models for the headers and records inside TensorGuard's binary formats.

Part of :mod:`tensorguard.codec` (which re-exports every name here); kept in its own
module so that importing the codec for canonical JSON alone does not import pydantic.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from tensorguard.codec import SchemaError

__all__ = [
    "IsoTimestamp",
    "ModelT",
    "Sha256Hex",
    "StrictModel",
    "describe_validation_error",
    "validate_model",
]


class StrictModel(BaseModel):
    """Base of the header and record models: no unknown fields, no coercion, immutable.

    ``strict=True`` means a JSON ``true`` is not an integer, ``"3"`` is not a number and
    ``1`` is not a string; a field that must be converted from its JSON form (a
    timestamp, an enum, a tensor layout) says so with its own validator.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


ModelT = TypeVar("ModelT", bound=BaseModel)

Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
"""A lower-case hex SHA-256 (a digest or a key fingerprint), nothing before or after."""


def _aware_time_from_json(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 time string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("is not an ISO 8601 time such as 2026-01-31T12:00:00+00:00") from None
    if moment.tzinfo is None:
        raise ValueError("must carry a UTC offset such as +00:00")
    return moment


IsoTimestamp = Annotated[datetime, BeforeValidator(_aware_time_from_json)]
"""A JSON string in ISO 8601 with a UTC offset (``datetime.isoformat()`` of an aware
time), read as a timezone-aware :class:`~datetime.datetime`; a naive time is refused."""


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
