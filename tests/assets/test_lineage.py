"""Upstream artifacts arrive as inputs: loaded from the upstream asset's recorded
materialisation (for the partition the input maps to), re-hashed, failing closed."""
# No "from __future__ import annotations": Dagster reads the parameter annotations at runtime.

from pathlib import Path
from typing import Any

from dagster import (
    AssetExecutionContext,
    DagsterInstance,
    DailyPartitionsDefinition,
    MaterializeResult,
    asset,
    materialize,
)

from tensorguard.digest import sha256_path
from tensorguard_assets.artifact_inputs import (
    VERIFIED_ARTIFACTS,
    VerifiedArtifact,
    VerifiedArtifacts,
    artifact_ins,
    with_upstream_specs,
)

DAYS = DailyPartitionsDefinition(start_date="2026-11-01")
RESOURCES = {VERIFIED_ARTIFACTS: VerifiedArtifacts()}
LOADED: dict[str, VerifiedArtifact] = {}


def _record(path: Path, text: str, **extra: Any) -> MaterializeResult:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return MaterializeResult(metadata={"path": str(path), "digest": sha256_path(path), **extra})


@asset
def upstream(context: AssetExecutionContext) -> MaterializeResult:
    """Writes its artifact where the run's tag says (the test's temp dir)."""
    return _record(Path(context.run.tags["out"]) / "upstream.txt", "weights", examples=7)


@asset(ins=artifact_ins("upstream"))
def reader(upstream: VerifiedArtifact) -> MaterializeResult:
    LOADED["reader"] = upstream
    return MaterializeResult(metadata={"read": upstream.digest})


@asset(partitions_def=DAYS)
def daily_upstream(context: AssetExecutionContext) -> MaterializeResult:
    out = Path(context.run.tags["out"]) / context.partition_key / "daily.txt"
    return _record(out, f"day {context.partition_key}")


@asset(partitions_def=DAYS, ins=artifact_ins("daily_upstream", "upstream"))
def daily_reader(daily_upstream: VerifiedArtifact, upstream: VerifiedArtifact) -> None:
    LOADED["daily_upstream"] = daily_upstream
    LOADED["upstream"] = upstream


@asset
def pathless() -> MaterializeResult:
    return MaterializeResult(metadata={"rows": 3})


@asset(ins=artifact_ins("pathless"))
def pathless_reader(pathless: VerifiedArtifact) -> None:
    raise AssertionError(f"loaded {pathless}")


@asset(io_manager_key=VERIFIED_ARTIFACTS)
def returns_a_value() -> int:
    return 1


TEST_ASSETS = (
    upstream,
    reader,
    daily_upstream,
    daily_reader,
    pathless,
    pathless_reader,
    returns_a_value,
)


def _failure(result: Any) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    user = event.step_failure_data.user_failure_data
    assert user is not None, event.step_failure_data.error
    return str(user.description)


def _materialize(
    assets: list[Any], instance: DagsterInstance, tmp_path: Path, partition: str | None = None
) -> Any:
    return materialize(
        with_upstream_specs(assets, TEST_ASSETS),
        instance=instance,
        resources=RESOURCES,
        partition_key=partition,
        tags={"out": str(tmp_path)},
        raise_on_error=False,
    )


def test_a_recorded_artifact_arrives_verified_with_its_metadata(
    sqlite_instance: DagsterInstance, tmp_path: Path
) -> None:
    assert _materialize([upstream], sqlite_instance, tmp_path).success
    assert _materialize([reader], sqlite_instance, tmp_path).success
    loaded = LOADED["reader"]
    artifact = tmp_path / "upstream.txt"
    assert (loaded.asset, loaded.partition, loaded.path) == ("upstream", None, artifact)
    assert loaded.digest == sha256_path(artifact)
    assert loaded.metadata["examples"] == 7


def test_a_partitioned_input_is_the_same_partitions_artifact(
    sqlite_instance: DagsterInstance, tmp_path: Path
) -> None:
    """A daily asset reads its own day of a daily upstream (the later day's newer
    materialisation is not it) and the one unpartitioned upstream."""
    assert _materialize([upstream], sqlite_instance, tmp_path).success
    for day in ("2026-11-02", "2026-11-03"):
        assert _materialize([daily_upstream], sqlite_instance, tmp_path, day).success
    assert _materialize([daily_reader], sqlite_instance, tmp_path, "2026-11-02").success
    assert LOADED["daily_upstream"].partition == "2026-11-02"
    assert LOADED["daily_upstream"].path.read_text(encoding="utf-8") == "day 2026-11-02"
    assert LOADED["upstream"].partition is None


def test_a_changed_artifact_fails_closed_naming_the_fix(
    sqlite_instance: DagsterInstance, tmp_path: Path
) -> None:
    assert _materialize([upstream], sqlite_instance, tmp_path).success
    artifact = tmp_path / "upstream.txt"
    recorded = sha256_path(artifact)
    artifact.write_text("tampered", encoding="utf-8")
    result = _materialize([reader], sqlite_instance, tmp_path)
    assert not result.success
    assert _failure(result) == (
        f"upstream artifact {artifact} changed since it was recorded (recorded {recorded}, "
        f"now {sha256_path(artifact)}); re-materialise upstream"
    )
    assert not result.asset_materializations_for_node("reader")


def test_a_missing_artifact_fails_closed_naming_the_fix(
    sqlite_instance: DagsterInstance, tmp_path: Path
) -> None:
    assert _materialize([upstream], sqlite_instance, tmp_path).success
    artifact = tmp_path / "upstream.txt"
    artifact.unlink()
    result = _materialize([reader], sqlite_instance, tmp_path)
    assert not result.success
    assert _failure(result) == f"upstream artifact {artifact} is missing; re-materialise upstream"


def test_a_record_without_an_artifact_path_fails_closed(
    sqlite_instance: DagsterInstance, tmp_path: Path
) -> None:
    assert _materialize([pathless], sqlite_instance, tmp_path).success
    result = _materialize([pathless_reader], sqlite_instance, tmp_path)
    assert not result.success
    assert _failure(result) == (
        "the latest materialisation of pathless recorded no artifact path; re-materialise pathless"
    )


def test_an_unmaterialised_input_names_every_missing_upstream(
    sqlite_instance: DagsterInstance, tmp_path: Path
) -> None:
    result = _materialize([daily_reader], sqlite_instance, tmp_path, "2026-11-02")
    assert not result.success
    message = _failure(result)
    assert message.startswith("daily_reader[2026-11-02] cannot start: 2 upstream assets")
    assert "not materialised: daily_upstream[2026-11-02], upstream" in message


def test_the_manager_refuses_to_store_a_returned_value(
    sqlite_instance: DagsterInstance, tmp_path: Path
) -> None:
    result = _materialize([returns_a_value], sqlite_instance, tmp_path)
    assert not result.success
    assert "returned a value (int) for the verified_artifacts manager to store" in _failure(result)
