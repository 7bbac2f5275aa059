"""Turn core-library errors into Dagster failures that are never retried."""

from __future__ import annotations

from dagster import Failure, MetadataValue

from tensorguard.errors import TensorGuardError


def fail_closed(error: TensorGuardError, *, step: str) -> Failure:
    """A non-retryable :class:`dagster.Failure` carrying the core error's message.

    Fail-closed errors (bad input, missing secrets, failed gates) are deterministic:
    retrying cannot help, so ``allow_retries=False`` stops step retry policies.
    """
    return Failure(
        description=f"{step} failed: {error}",
        metadata={"error_type": MetadataValue.text(type(error).__name__)},
        allow_retries=False,
    )
