"""PostgreSQL killed while a round's release run writes (#18 item 4): the Dagster instance
and the application DB both live on a dedicated server (never the shared session one),
which is stopped (immediate shutdown) the moment the run's package is written. The run
fails clearly, nothing is half-written (no release in the registry or the application
DB), and after a restart a re-run completes and announces the release."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

import pytest
from dagster import DagsterRunStatus, instance_for_test

from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.registry import LocalRegistry
from tests.e2e.conftest import unique_fleet
from tests.e2e.rounds import (
    ROUND_RELEASE_JOB,
    SETUP_JOB,
    StageRun,
    base_model_config,
    development_process_env,
    failed_stages,
    pipeline_definitions,
    run_release,
    run_stage,
    start_round,
    tensorguard_env,
)
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import (
    RestartablePostgres,
    create_database,
    running_restartable_postgres,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROUND = "2026-11-25"
CHANNEL = "stable"


def stop_when_written(path_glob: tuple[Path, str], server: RestartablePostgres) -> threading.Event:
    """Stop ``server`` as soon as a file matching the glob exists; return 'stopped'."""
    stopped = threading.Event()
    directory, pattern = path_glob

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if directory.exists() and any(directory.rglob(pattern)):
                server.stop()
                stopped.set()
                return
            time.sleep(0.005)

    threading.Thread(target=watch, daemon=True).start()
    return stopped


def test_postgres_killed_during_the_release_run_then_a_rerun_completes(
    tmp_path: Path,
    mosquitto_broker: MosquittoBroker,
    prebuilt_base_model: Path,
    demo_sites: list[str],
) -> None:
    fleet = unique_fleet("e2e-pgfault")
    env = tensorguard_env(tmp_path / "state", fleet=fleet, broker=mosquitto_broker)
    artifacts = Path(env["TG_ARTIFACT_ROOT"])
    registry = LocalRegistry(tmp_path / "state" / "registry")
    with running_restartable_postgres() as server:
        app_url = create_database(server.server, f"tg_app_{secrets.token_hex(4)}")
        overrides = {"storage": {"postgres": {"postgres_url": server.server.url}}}
        with (
            development_process_env(),
            pytest.MonkeyPatch.context() as patch,
            instance_for_test(overrides=overrides) as instance,
        ):
            patch.setenv("DATABASE_URL", app_url)
            definitions = pipeline_definitions(env)
            stages = start_round(
                definitions,
                instance,
                ROUND,
                registered_sites=demo_sites,
                trained_sites=demo_sites,
                run_config={SETUP_JOB: base_model_config(prebuilt_base_model)},
            )
            assert all(run.success for run in stages.values()), failed_stages(stages)
            before = run_release(definitions, instance, ROUND, jobs=("aggregation_job",))
            assert before.success, before.failure_messages()
            for job in ("reveal_job", "decryption_job"):
                group = run_release(definitions, instance, ROUND, jobs=(job,))
                assert group.success, group.failure_messages()

            # The release run: PostgreSQL dies as soon as the package file is written.
            stopped = stop_when_written((artifacts / "tgsp_package", "*.tgsp"), server)
            failure: BaseException | None = None
            faulted: StageRun | None = None
            try:
                faulted = run_stage(definitions, instance, ROUND_RELEASE_JOB, ROUND)
            except Exception as exc:  # the instance itself cannot write: a raised error
                failure = exc
            assert stopped.wait(timeout=5), "the package was never written"
            assert failure is not None or (faulted is not None and not faulted.success)
            if failure is not None:
                text = f"{type(failure).__name__}: {failure}"
                assert "connect" in text.lower() or "server" in text.lower(), text

            server.start()
            # Nothing half-written: no release in the registry or the application DB.
            assert registry.latest(CHANNEL) is None
            database = FleetDatabase(app_url)
            try:
                assert database.releases(fleet, CHANNEL) == []
            finally:
                database.close()
            # The interrupted run is not recorded as a success.
            if faulted is not None:
                record = instance.get_run_by_id(faulted.run_id)
                assert record is not None
                assert record.status != DagsterRunStatus.SUCCESS

            rerun = run_stage(definitions, instance, ROUND_RELEASE_JOB, ROUND)
            assert rerun.success, rerun.failure_messages()
            release = rerun.metadata("release")
            assert release["announcement"] == "delivered"
            latest = registry.latest(CHANNEL)
            assert latest is not None
            assert latest.version == 1
            database = FleetDatabase(app_url)
            try:
                [row] = database.releases(fleet, CHANNEL)
            finally:
                database.close()
            assert (row.version, row.digest) == (1, latest.digest)
