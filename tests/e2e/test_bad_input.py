"""Bad input fails closed in a real Dagster run: a clear message that names the file
(and line) or path and the fix, and nothing half-written."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, instance_for_test

from tensorguard.sites import demo_site_registry
from tensorguard.training.dataset import EVAL_FILE, TRAIN_FILE
from tensorguard_assets.partitions import round_site_key, site_partitions
from tests.e2e.conftest import unique_fleet
from tests.e2e.rounds import (
    SETUP_JOB,
    SITE_TRAINING_JOB,
    StageRun,
    base_model_config,
    pipeline_definitions,
    run_stage,
    tensorguard_env,
)

ROUND = "2026-11-23"
BROKEN_SITE = "broken-site"
SITE_TRAINING_ASSETS = ("site_dataset", "site_adapter", "site_update")


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    """A fresh SQLite-backed Dagster instance."""
    with instance_for_test() as test_instance:
        yield test_instance


def recorded(instance: DagsterInstance, asset_name: str) -> list[object]:
    """Every materialisation of ``asset_name`` the instance holds."""
    records_filter = AssetRecordsFilter(asset_key=AssetKey(asset_name))
    return list(instance.fetch_materializations(records_filter, limit=10).records)


def train_site(instance: DagsterInstance, env: dict[str, str], site_id: str) -> StageRun:
    """Register ``site_id`` as a partition and run its training job for the round."""
    assert site_partitions.name is not None
    instance.add_dynamic_partitions(site_partitions.name, [site_id])
    return run_stage(
        pipeline_definitions(env), instance, SITE_TRAINING_JOB, round_site_key(ROUND, site_id)
    )


def assert_site_data_rejected(run: StageRun, instance: DagsterInstance, artifacts: Path) -> str:
    """The run failed at site_dataset, wrote no artifact and recorded nothing."""
    assert not run.success
    assert run.failed_steps() == ["site_dataset"]
    assert run.materialized_assets() == set()
    for asset_name in SITE_TRAINING_ASSETS:
        assert recorded(instance, asset_name) == [], asset_name
        assert not (artifacts / asset_name).exists(), asset_name
    return run.failure_messages()


def _malformed_line_three(site_dir: Path) -> tuple[Path, str]:
    path = site_dir / TRAIN_FILE
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] = '{"text": "a record cut off in the middle'
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, f"{path}:3: "


def _empty_training_file(site_dir: Path) -> tuple[Path, str]:
    path = site_dir / TRAIN_FILE
    path.write_bytes(b"")
    return path, f"{path}: file is empty"


def _missing_eval_file(site_dir: Path) -> tuple[Path, str]:
    path = site_dir / EVAL_FILE
    path.unlink()
    return path, f"{path}: file not found"


@pytest.mark.parametrize(
    "damage",
    [_malformed_line_three, _empty_training_file, _missing_eval_file],
    ids=["malformed-line", "empty-file", "missing-file"],
)
def test_bad_site_data_fails_naming_the_file_and_writes_nothing(
    tmp_path: Path,
    instance: DagsterInstance,
    damage: Callable[[Path], tuple[Path, str]],
) -> None:
    source = demo_site_registry()["lab-east"].data_dir
    site_dir = tmp_path / "sites" / BROKEN_SITE
    shutil.copytree(source, site_dir)
    damaged_file, expected = damage(site_dir)
    sites_file = tmp_path / "sites" / "sites.yaml"
    sites_file.write_text(
        yaml.safe_dump({"sites": [{"id": BROKEN_SITE, "data_dir": BROKEN_SITE}]}),
        encoding="utf-8",
    )
    env = tensorguard_env(tmp_path / "state", fleet=unique_fleet("e2e-bad"))
    env["TG_SITES_FILE"] = str(sites_file)
    run = train_site(instance, env, BROKEN_SITE)
    messages = assert_site_data_rejected(run, instance, tmp_path / "state" / "artifacts")
    assert f"site_dataset[{round_site_key(ROUND, BROKEN_SITE)}] failed: {expected}" in messages
    assert damaged_file.name in messages


def test_unknown_site_partition_lists_the_registered_sites(
    tmp_path: Path, instance: DagsterInstance
) -> None:
    env = tensorguard_env(tmp_path / "state", fleet=unique_fleet("e2e-bad"))
    run = train_site(instance, env, "site-nobody-registered")
    messages = assert_site_data_rejected(run, instance, tmp_path / "state" / "artifacts")
    registered = ", ".join(sorted(demo_site_registry()))
    assert f"unknown site 'site-nobody-registered'; registered sites: {registered}." in messages
    assert "TG_SITES_FILE" in messages


@pytest.mark.parametrize("make_dir", [True, False], ids=["not-hf", "missing"])
def test_bad_base_model_directory_fails_naming_the_path(
    tmp_path: Path, instance: DagsterInstance, make_dir: bool
) -> None:
    model_dir = tmp_path / "not-a-model"
    if make_dir:
        model_dir.mkdir()
        (model_dir / "weights.bin").write_bytes(b"\x00" * 64)
    env = tensorguard_env(tmp_path / "state", fleet=unique_fleet("e2e-bad"))
    run = run_stage(
        pipeline_definitions(env),
        instance,
        SETUP_JOB,
        run_config=base_model_config(model_dir),
        asset_selection=["base_model"],
    )
    assert not run.success
    assert run.failed_steps() == ["base_model"]
    messages = run.failure_messages()
    expected = (
        "not a Hugging Face model directory (config.json is missing)"
        if make_dir
        else "base model directory not found"
    )
    assert f"base_model failed: {model_dir}: {expected}" in messages
    assert recorded(instance, "base_model") == []
    assert not (tmp_path / "state" / "artifacts" / "base_model").exists()
    assert sorted(p.name for p in model_dir.glob("*")) == (["weights.bin"] if make_dir else [])
