"""Upstream artifacts are read only from declared dependencies."""
# No "from __future__ import annotations": Dagster reads the context annotation at runtime.

from typing import Any

from dagster import AssetExecutionContext, DagsterInstance, MaterializeResult, asset, materialize

from tensorguard_assets.lineage import upstream_metadata


@asset
def upstream() -> MaterializeResult:
    return MaterializeResult(metadata={"path": "/nowhere", "digest": "ab" * 32})


@asset(deps=["upstream"])
def declared_reader(context: AssetExecutionContext) -> MaterializeResult:
    return MaterializeResult(metadata=upstream_metadata(context, "upstream"))


@asset
def undeclared_reader(context: AssetExecutionContext) -> None:
    upstream_metadata(context, "upstream")


def _failure(result: Any) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    return str(event.event_specific_data.error.to_string())


def test_a_declared_dependency_is_read(sqlite_instance: DagsterInstance) -> None:
    result = materialize([upstream, declared_reader], instance=sqlite_instance)
    [materialization] = result.asset_materializations_for_node("declared_reader")
    assert materialization.metadata["digest"].value == "ab" * 32


def test_an_undeclared_read_fails_naming_the_fix(sqlite_instance: DagsterInstance) -> None:
    materialize([upstream], instance=sqlite_instance)
    result = materialize([undeclared_reader], instance=sqlite_instance, raise_on_error=False)
    assert not result.success
    message = _failure(result)
    assert "undeclared_reader reads upstream without declaring it as a dependency" in message
    assert "add 'upstream' to the asset's deps" in message
