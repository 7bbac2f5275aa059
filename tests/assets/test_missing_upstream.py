"""Launching an asset whose upstream is missing fails at once, naming every missing asset
and how to make it for that round (the command and the UI's jobs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import DagsterInstance, materialize

from tensorguard_assets.lineage import STAGE_JOBS, upstream_partitions
from tensorguard_assets.locations import runnable_assets
from tensorguard_assets.partitions import round_site_key
from tensorguard_assets.release import release
from tensorguard_assets.resources import build_resources
from tensorguard_assets.training import site_adapter
from tests.asset_graph import ASSET_GRAPH, round_asset_names
from tests.assets.conftest import DEMO_ROUND

DEMO_COMMAND = f".venv/bin/python -m tensorguard_assets.demo --round {DEMO_ROUND}"


def failure_text(result: Any) -> str:
    [event] = [e for e in result.all_events if e.is_step_failure]
    user = event.step_failure_data.user_failure_data
    assert user is not None, event.step_failure_data.error
    return str(user.description)


def test_a_site_asset_names_every_missing_upstream_and_the_round_command(
    sqlite_instance: DagsterInstance, demo_site_ids: list[str], tmp_path: Path
) -> None:
    site = demo_site_ids[0]
    key = round_site_key(DEMO_ROUND, site)
    result = materialize(
        runnable_assets([site_adapter]),
        partition_key=str(key),
        instance=sqlite_instance,
        resources=build_resources({"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")}),
        raise_on_error=False,
    )
    assert not result.success
    message = failure_text(result)
    assert message.startswith(f"site_adapter[{key}] cannot start: 3 upstream assets")
    for missing in ("base_model", f"round_spec[{DEMO_ROUND}]", f"site_dataset[{key}]"):
        assert missing in message
    assert DEMO_COMMAND in message
    assert "launch setup_job, then round_open_job, then site_training_job" in message
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").rglob("*"))


def test_a_round_asset_names_every_missing_upstream(
    sqlite_instance: DagsterInstance, tmp_path: Path
) -> None:
    result = materialize(
        runnable_assets([release]),
        partition_key=DEMO_ROUND,
        instance=sqlite_instance,
        resources=build_resources({"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")}),
        raise_on_error=False,
    )
    assert not result.success
    message = failure_text(result)
    upstream = sorted(ASSET_GRAPH["release"][1])
    assert f"{len(upstream)} upstream assets not materialised" in message
    for name in upstream:
        assert f"{name}[{DEMO_ROUND}]" in message
    assert DEMO_COMMAND in message
    assert "launch decryption_job, then round_release_job" in message


def test_the_aggregate_leaves_the_sites_to_its_quorum() -> None:
    wanted = upstream_partitions(set(ASSET_GRAPH["aggregated_update"][1]), DEMO_ROUND)
    assert wanted == {
        "federation_keys": None,
        "round_spec": DEMO_ROUND,
    }


def test_every_round_asset_has_a_stage_job() -> None:
    assert set(STAGE_JOBS) == round_asset_names()
