"""The site registry sensor and the round schedule, evaluated against a real instance."""

from __future__ import annotations

import datetime
from pathlib import Path

from dagster import (
    DagsterInstance,
    MultiPartitionKey,
    RunRequest,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from tensorguard.sites import demo_sites_root
from tensorguard_assets.automation import round_training_schedule, site_registry_sensor
from tensorguard_assets.partitions import site_partitions
from tensorguard_resources import SiteRegistry


def _write_registry(path: Path, site_ids: list[str]) -> None:
    lines = ["sites:"]
    for site_id in site_ids:
        lines += [f"  - id: {site_id}", f"    data_dir: {demo_sites_root() / 'hospital-north'}"]
    path.write_text("\n".join(lines) + "\n")


def _apply(instance: DagsterInstance, result: SensorResult) -> None:
    for request in result.dynamic_partitions_requests or []:
        if type(request).__name__ == "AddDynamicPartitionsRequest":
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def test_sensor_adds_new_site_and_removes_deregistered(tmp_path: Path) -> None:
    registry_file = tmp_path / "sites.yaml"
    _write_registry(registry_file, ["site-a", "site-b"])
    sites = SiteRegistry(sites_file=str(registry_file))
    with instance_for_test() as instance:
        first = site_registry_sensor(build_sensor_context(instance=instance), sites=sites)
        assert isinstance(first, SensorResult)
        _apply(instance, first)
        assert sorted(instance.get_dynamic_partitions("sites")) == ["site-a", "site-b"]

        unchanged = site_registry_sensor(
            build_sensor_context(instance=instance, cursor=first.cursor), sites=sites
        )
        assert isinstance(unchanged, SkipReason)

        _write_registry(registry_file, ["site-b", "site-c"])
        second = site_registry_sensor(
            build_sensor_context(instance=instance, cursor=first.cursor), sites=sites
        )
        assert isinstance(second, SensorResult)
        _apply(instance, second)
        assert sorted(instance.get_dynamic_partitions("sites")) == ["site-b", "site-c"]


def test_sensor_skips_on_broken_registry(tmp_path: Path) -> None:
    broken = tmp_path / "sites.yaml"
    broken.write_text("sites: [ {id: 'UPPER', data_dir: x} ]\n")
    with instance_for_test() as instance:
        result = site_registry_sensor(
            build_sensor_context(instance=instance), sites=SiteRegistry(sites_file=str(broken))
        )
        assert isinstance(result, SkipReason)
        assert "UPPER" in str(result.skip_message)
        assert instance.get_dynamic_partitions("sites") == []


def test_schedule_requests_one_run_per_site_for_the_closed_round() -> None:
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(site_partitions.name or "sites", ["s1", "s2"])
        when = datetime.datetime(2026, 11, 20, 2, 0, tzinfo=datetime.UTC)
        context = build_schedule_context(instance=instance, scheduled_execution_time=when)
        requests = round_training_schedule(context)
        assert isinstance(requests, list)
        keys = sorted(str(r.partition_key) for r in requests if isinstance(r, RunRequest))
        assert keys == [
            str(MultiPartitionKey({"round": "2026-11-19", "site": "s1"})),
            str(MultiPartitionKey({"round": "2026-11-19", "site": "s2"})),
        ]


def test_schedule_skips_without_sites() -> None:
    with instance_for_test() as instance:
        when = datetime.datetime(2026, 11, 20, 2, 0, tzinfo=datetime.UTC)
        context = build_schedule_context(instance=instance, scheduled_execution_time=when)
        assert isinstance(round_training_schedule(context), SkipReason)
