"""``fail_closed_on``: core errors become non-retryable failures named by the asset."""

# No "from __future__ import annotations": Dagster reads the context annotation at runtime.

from typing import Any

from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    RetryPolicy,
    StaticPartitionsDefinition,
    asset,
    materialize,
)

from tensorguard.errors import ConfigurationError
from tensorguard_resources import fail_closed_on

PARTITIONS = StaticPartitionsDefinition(["2026-11-20"])


def _failure(result: Any) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    return str(event.event_specific_data.error.to_string())


@asset(partitions_def=PARTITIONS, retry_policy=RetryPolicy(max_retries=2))
def partitioned_asset(context: AssetExecutionContext) -> None:
    with fail_closed_on(context, note=lambda _exc: "with a remark"):
        raise ConfigurationError("TG_SOMETHING is not set")


@asset
def plain_asset(context: AssetExecutionContext) -> None:
    with fail_closed_on(context):
        raise ConfigurationError("bad input")


@asset
def other_error_asset(context: AssetExecutionContext) -> None:
    with fail_closed_on(context):
        raise ValueError("a bug, not a fail-closed error")


def test_a_core_error_fails_once_with_the_asset_partition_and_note(
    sqlite_instance: DagsterInstance,
) -> None:
    result = materialize(
        [partitioned_asset],
        instance=sqlite_instance,
        partition_key="2026-11-20",
        raise_on_error=False,
    )
    assert not result.success
    message = _failure(result)
    assert "partitioned_asset[2026-11-20] (with a remark) failed: TG_SOMETHING is not set" in (
        message
    )
    # allow_retries=False: the retry policy never re-runs a fail-closed step.
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]


def test_an_unpartitioned_asset_is_named_by_its_key(sqlite_instance: DagsterInstance) -> None:
    result = materialize([plain_asset], instance=sqlite_instance, raise_on_error=False)
    assert "plain_asset failed: bad input" in _failure(result)


def test_other_exceptions_pass_through(sqlite_instance: DagsterInstance) -> None:
    result = materialize([other_error_asset], instance=sqlite_instance, raise_on_error=False)
    message = _failure(result)
    assert "a bug, not a fail-closed error" in message
    assert "failed:" not in message
