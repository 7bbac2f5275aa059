"""Turn core-library errors into Dagster failures that are never retried."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dagster import AssetExecutionContext, Failure, MetadataValue

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


def step_label(context: AssetExecutionContext) -> str:
    """``asset[partition]`` of the running asset (the op name for a multi-asset step)."""
    keys = context.selected_asset_keys
    name = next(iter(keys)).to_user_string() if len(keys) == 1 else context.op_def.name
    return f"{name}[{context.partition_key}]" if context.has_partition_key else name


@contextmanager
def fail_closed_on(
    context: AssetExecutionContext,
    note: Callable[[TensorGuardError], str | None] | None = None,
) -> Iterator[None]:
    """Run the block; turn a :class:`TensorGuardError` into the fail-closed failure of
    the running asset, labelled by its own key and partition (see :func:`step_label`).

    ``note``, when given, may add a parenthesised remark computed from the error (for
    example which sites were silent when a quorum was missed).
    """
    try:
        yield
    except TensorGuardError as exc:
        remark = note(exc) if note is not None else None
        label = step_label(context) + (f" ({remark})" if remark else "")
        raise fail_closed(exc, step=label) from None
