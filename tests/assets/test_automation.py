"""The site registry sensor and the round schedule, evaluated against a real instance."""

from __future__ import annotations

import datetime
import uuid
from pathlib import Path

from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DagsterRun,
    DagsterRunStatus,
    MultiPartitionKey,
    RunRequest,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
)

from tensorguard.sites import demo_sites_root
from tensorguard_assets.automation import (
    aggregation_sensor,
    decryption_sensor,
    round_open_schedule,
    round_progress_sensor,
    site_registry_sensor,
)
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


def test_schedule_opens_the_round_that_just_closed() -> None:
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(site_partitions.name or "sites", ["s1", "s2"])
        when = datetime.datetime(2026, 11, 20, 2, 0, tzinfo=datetime.UTC)
        context = build_schedule_context(instance=instance, scheduled_execution_time=when)
        request = round_open_schedule(context)
        assert isinstance(request, RunRequest)
        assert request.partition_key == "2026-11-19"


def test_schedule_skips_without_sites() -> None:
    with instance_for_test() as instance:
        when = datetime.datetime(2026, 11, 20, 2, 0, tzinfo=datetime.UTC)
        context = build_schedule_context(instance=instance, scheduled_execution_time=when)
        assert isinstance(round_open_schedule(context), SkipReason)


def _record(instance: DagsterInstance, asset: str, partition: str) -> None:
    instance.report_runless_asset_event(AssetMaterialization(asset_key=asset, partition=partition))


def _requests(instance: DagsterInstance) -> list[RunRequest]:
    """What every location's round sensor asks for now (each launches its own jobs)."""
    requests: list[RunRequest] = []
    for sensor in (round_progress_sensor, aggregation_sensor, decryption_sensor):
        result = sensor(build_sensor_context(instance=instance))
        requests += result if isinstance(result, list) else []
    return requests


def test_each_locations_sensor_requests_only_its_own_jobs() -> None:
    assert {job.name for job in round_progress_sensor.jobs} == {
        "site_training_job",
        "reveal_job",
        "round_release_job",
    }
    assert [job.name for job in aggregation_sensor.jobs] == ["aggregation_job"]
    assert [job.name for job in decryption_sensor.jobs] == ["decryption_job"]


def test_progress_sensors_walk_a_round_from_training_to_release() -> None:
    round_key = "2026-11-19"
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("sites", ["s1", "s2"])
        assert _requests(instance) == []  # no round open yet

        _record(instance, "round_spec", round_key)
        training = _requests(instance)
        assert sorted((r.job_name, str(r.partition_key)) for r in training) == [
            ("site_training_job", str(MultiPartitionKey({"round": round_key, "site": "s1"}))),
            ("site_training_job", str(MultiPartitionKey({"round": round_key, "site": "s2"}))),
        ]

        _record(instance, "site_update", str(MultiPartitionKey({"round": round_key, "site": "s1"})))
        assert [r.job_name for r in _requests(instance)] == ["site_training_job"]

        _record(instance, "site_update", str(MultiPartitionKey({"round": round_key, "site": "s2"})))
        # Each party's stage follows the previous party's asset, once per round.
        for built, next_job in [
            (None, "aggregation_job"),
            ("aggregated_update", "reveal_job"),
            ("seed_reveals", "decryption_job"),
            ("global_adapter", "round_release_job"),
        ]:
            if built is not None:
                _record(instance, built, round_key)
            [request] = _requests(instance)
            assert (request.job_name, request.partition_key) == (next_job, round_key)
            assert request.run_key == f"{next_job}:{round_key}"

        _record(instance, "release", round_key)
        assert _requests(instance) == []


def test_at_the_deadline_the_round_releases_without_its_silent_site() -> None:
    round_key = "2026-11-20"
    s1 = str(MultiPartitionKey({"round": round_key, "site": "s1"}))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("sites", ["s1", "s2", "s3"])

        def open_round(deadline: datetime.datetime) -> None:
            instance.report_runless_asset_event(
                AssetMaterialization(
                    asset_key="round_spec",
                    partition=round_key,
                    metadata={"deadline": deadline.isoformat(), "min_sites": 2},
                )
            )

        now = datetime.datetime.now(datetime.UTC)
        open_round(now + datetime.timedelta(hours=1))
        _record(instance, "site_update", s1)
        _record(instance, "site_update", str(MultiPartitionKey({"round": round_key, "site": "s2"})))
        assert [r.job_name for r in _requests(instance)] == ["site_training_job"]  # s3 pending

        open_round(now - datetime.timedelta(seconds=1))
        jobs = sorted(r.job_name for r in _requests(instance))
        assert jobs == ["aggregation_job", "site_training_job"]
        [release] = [r for r in _requests(instance) if r.job_name == "aggregation_job"]
        assert release.tags["tensorguard/round_stage"] == "aggregate_at_deadline"


def test_a_failed_site_training_is_retried_under_a_new_run_key_and_bounded() -> None:
    round_key = "2026-11-21"
    partition = str(MultiPartitionKey({"round": round_key, "site": "s1"}))
    with instance_for_test() as instance:
        instance.add_dynamic_partitions("sites", ["s1"])
        _record(instance, "round_spec", round_key)
        keys = []
        for _ in range(3):
            [request] = _requests(instance)
            keys.append(request.run_key)
            instance.add_run(
                DagsterRun(
                    job_name="site_training_job",
                    run_id=str(uuid.uuid4()),
                    status=DagsterRunStatus.FAILURE,
                    tags={"dagster/partition": partition},
                )
            )
        assert keys == [f"train:{round_key}|s1#{n}" for n in (1, 2, 3)]
        assert _requests(instance) == []  # three failures: no fourth attempt
