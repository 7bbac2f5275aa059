"""A full round on a real distributed executor: dagster-celery with two workers.

Redis (Debian's ``redis-server``) is the Celery broker and result backend, the Dagster
instance is PostgreSQL (the workers write their steps' events into the same storage),
and every stage is launched the way an operator without the daemon would launch it:
``dagster job execute`` against the stage's own code location, with
``TG_EXECUTOR=celery``. Two ``dagster-celery`` workers, started from the shipped
``deploy/celery-worker.yaml``, execute the steps. The round must materialise the same
assets and pass the same checks as the embedded round, and both workers must have done
part of the work.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    MultiPartitionKey,
    RunsFilter,
)

from tensorguard_assets.locations import (
    AGGREGATOR,
    COORDINATOR,
    CUSTODIAN,
    ROUND_RELEASE_JOBS,
    ROUND_SETUP_JOBS,
    CodeLocation,
    location_of_job,
)
from tensorguard_assets.partitions import round_site_key, site_partitions
from tests.e2e.conftest import unique_fleet
from tests.e2e.rounds import (
    PROCESS_ENV_NAMES,
    PROCESS_ENV_PREFIXES,
    ROUND_OPEN_JOB,
    SETUP_JOB,
    SITE_TRAINING_JOB,
    base_model_config,
    round_asset_names,
    tensorguard_env,
)
from tests.e2e.test_postgres_round import create_database
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import PostgresServer
from tests.services.process import ServiceProcess
from tests.services.redis import RedisServer, running_redis

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_CONFIG = REPO_ROOT / "deploy" / "celery-worker.yaml"
ROUND = "2026-11-26"
WORKER_NAMES = ("tg-worker-1", "tg-worker-2")
STAGE_TIMEOUT_S = 900
# The module of each location's Definitions, as workspace.yaml loads them.
LOCATION_MODULES = {
    COORDINATOR.name: "tensorguard_assets.definitions",
    AGGREGATOR.name: "tensorguard_assets.aggregator_definitions",
    CUSTODIAN.name: "tensorguard_assets.custodian_definitions",
}


@dataclass(frozen=True)
class CeleryRound:
    """The finished round: its instance, runs by stage, and the workers' logs."""

    instance: DagsterInstance
    run_ids: dict[str, str]
    worker_logs: dict[str, Path]


def test_location_modules_are_the_workspace() -> None:
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    loaded = {
        entry["python_module"]["location_name"]: entry["python_module"]["module_name"]
        for entry in workspace["load_from"]
    }
    assert loaded == LOCATION_MODULES


def _process_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without TensorGuard or Dagster settings, plus ``extra``,
    with the venv's ``bin`` first on PATH (the worker command starts ``celery`` from it)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(PROCESS_ENV_PREFIXES) and name not in PROCESS_ENV_NAMES
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | dict(extra)


@contextmanager
def celery_workers(env: Mapping[str, str], log_dir: Path) -> Iterator[dict[str, Path]]:
    """Start the two workers from deploy/celery-worker.yaml; stop them by PID on exit."""
    workers = [
        ServiceProcess(
            name=name,
            argv=[
                str(Path(sys.executable).parent / "dagster-celery"),
                "worker",
                "start",
                "-A",
                "dagster_celery.app",
                "-y",
                str(WORKER_CONFIG),
                "-n",
                name,
                "--",
                "--concurrency",
                "1",
            ],
            log_path=log_dir / f"{name}.log",
            env=dict(env),
        )
        for name in WORKER_NAMES
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.wait_until(
                lambda worker=worker: "ready." in worker.log_path.read_text(errors="replace"),
                timeout=120,
            )
        yield {worker.name: worker.log_path for worker in workers}
    finally:
        for worker in workers:
            worker.stop()


def execute_stage(
    env: Mapping[str, str],
    job_name: str,
    partition_key: str | MultiPartitionKey | None,
    run_config: Path | None,
    log_dir: Path,
    label: str,
) -> None:
    """``dagster job execute`` one stage against its own location; fail with its output."""
    location: CodeLocation = location_of_job(job_name)
    argv = [
        str(Path(sys.executable).parent / "dagster"),
        "job",
        "execute",
        "-m",
        LOCATION_MODULES[location.name],
        "-a",
        "defs",
        "-j",
        job_name,
    ]
    if partition_key is not None:
        argv += ["--tags", json.dumps(partition_tags(partition_key))]
    if run_config is not None:
        argv += ["-c", str(run_config)]
    log = log_dir / f"{label}.log"
    with log.open("wb") as out:
        completed = subprocess.run(
            argv,
            env=dict(env),
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=STAGE_TIMEOUT_S,
            check=False,
        )
    assert completed.returncode == 0, f"{label} failed:\n{log.read_text()[-6000:]}"


def partition_tags(partition_key: str | MultiPartitionKey) -> dict[str, str]:
    """The run tags that name a partition, with one tag per dimension of a multi key."""
    tags = {"dagster/partition": str(partition_key)}
    if isinstance(partition_key, MultiPartitionKey):
        tags |= {
            f"dagster/partition/{dimension}": key
            for dimension, key in partition_key.keys_by_dimension.items()
        }
    return tags


def round_plan(
    site_ids: Sequence[str],
) -> list[tuple[str, str, str | MultiPartitionKey | None]]:
    """(label, job, partition key) of every stage of one round, in order."""
    plan: list[tuple[str, str, str | MultiPartitionKey | None]] = [
        (job, job, None) for job in ROUND_SETUP_JOBS
    ]
    plan.append((ROUND_OPEN_JOB, ROUND_OPEN_JOB, ROUND))
    plan += [
        (f"{SITE_TRAINING_JOB}[{site}]", SITE_TRAINING_JOB, round_site_key(ROUND, site))
        for site in site_ids
    ]
    plan += [(job, job, ROUND) for job in ROUND_RELEASE_JOBS]
    return plan


@pytest.fixture(scope="module")
def celery_round(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    mosquitto_broker: MosquittoBroker,
    prebuilt_base_model: Path,
    demo_sites: list[str],
) -> Iterator[CeleryRound]:
    """One full round, every step executed by the Celery workers."""
    state = tmp_path_factory.mktemp("celery-round")
    logs = state / "logs"
    logs.mkdir()
    home = state / "dagster"
    home.mkdir()
    dagster_url = create_database(postgres_server, f"tg_celery_{secrets.token_hex(4)}")
    app_url = create_database(postgres_server, f"tg_celery_app_{secrets.token_hex(4)}")
    (home / "dagster.yaml").write_text(
        yaml.safe_dump(
            {
                "storage": {"postgres": {"postgres_url": dagster_url}},
                "telemetry": {"enabled": False},
            }
        )
    )
    setup_config = state / "setup.yaml"
    setup_config.write_text(yaml.safe_dump(base_model_config(prebuilt_base_model)))
    with ExitStack() as stack:
        redis: RedisServer = stack.enter_context(running_redis())
        env = _process_env(
            {
                "DAGSTER_HOME": str(home),
                "DATABASE_URL": app_url,
                "TG_EXECUTOR": "celery",
                "TG_CELERY_BROKER": redis.url(0),
                **tensorguard_env(state, fleet=unique_fleet("e2e-celery"), broker=mosquitto_broker),
            }
        )
        worker_logs = stack.enter_context(celery_workers(env, logs))
        instance = stack.enter_context(DagsterInstance.from_config(str(home)))
        assert site_partitions.name is not None
        instance.add_dynamic_partitions(site_partitions.name, demo_sites)
        run_ids: dict[str, str] = {}
        for label, job_name, partition_key in round_plan(demo_sites):
            started = time.time()
            config = setup_config if job_name == SETUP_JOB else None
            execute_stage(env, job_name, partition_key, config, logs, label)
            [run] = instance.get_runs(
                filters=RunsFilter(
                    job_name=job_name, updated_after=datetime.fromtimestamp(started, tz=UTC)
                ),
                limit=1,
            )
            run_ids[label] = run.run_id
        yield CeleryRound(instance=instance, run_ids=run_ids, worker_logs=worker_logs)


def test_every_stage_succeeded_on_the_postgres_instance(celery_round: CeleryRound) -> None:
    instance = celery_round.instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    statuses = {
        label: instance.get_run_by_id(run_id).status  # type: ignore[union-attr]
        for label, run_id in celery_round.run_ids.items()
    }
    assert set(statuses.values()) == {DagsterRunStatus.SUCCESS}, statuses


def test_the_round_materialised_every_asset_and_passed_every_check(
    celery_round: CeleryRound,
) -> None:
    instance = celery_round.instance
    materialised: set[str] = set()
    checks: dict[str, bool] = {}
    for run_id in celery_round.run_ids.values():
        for record in instance.all_logs(run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                key = event.asset_key
                assert isinstance(key, AssetKey)
                materialised.add(key.to_user_string())
            if event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.event_specific_data
                checks[f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}"] = (  # type: ignore[union-attr]
                    evaluation.passed  # type: ignore[union-attr]
                )
    assert materialised == round_asset_names()
    assert checks, "no asset check ran"
    assert all(checks.values()), {name for name, passed in checks.items() if not passed}


def test_both_workers_executed_steps(celery_round: CeleryRound) -> None:
    """The steps really ran on the Celery workers, and on both of them."""
    executed = {
        name: log.read_text(errors="replace").count("succeeded in")
        for name, log in celery_round.worker_logs.items()
    }
    assert all(count > 0 for count in executed.values()), executed
