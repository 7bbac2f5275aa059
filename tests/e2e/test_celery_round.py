"""A full round on a real distributed executor: dagster-celery with two workers, entirely
on PostgreSQL.

Redis (Debian's ``redis-server``) is the Celery broker and result backend, the Dagster
instance is PostgreSQL (the workers write their steps' events into the same storage),
the application database (releases, audit log) is a PostgreSQL database of its own,
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
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy
import yaml
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    MultiPartitionKey,
    RunsFilter,
)

from tensorguard.fleet.db import FleetDatabase, current_revision, head_revision
from tensorguard.fleet.topics import release_topic
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
from tests.services.dagster_webserver import stop_process_groups
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import PostgresServer, create_database
from tests.services.process import ServiceProcess
from tests.services.redis import RedisServer, running_redis

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_CONFIG = REPO_ROOT / "deploy" / "celery-worker.yaml"
ROUND = "2026-11-26"
CHANNEL = "stable"
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
    fleet: str
    dagster_url: str
    app_url: str


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
    """Start the two workers from deploy/celery-worker.yaml; stop each one's process group
    on exit (``dagster-celery worker start`` runs ``celery worker`` as a child, which a
    signal to the wrapper's PID alone leaves running)."""
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
        started = [worker.process for worker in workers if worker.process is not None]
        stop_process_groups(started, signal.SIGTERM, timeout=20)


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
    fleet = unique_fleet("e2e-celery")
    with ExitStack() as stack:
        redis: RedisServer = stack.enter_context(running_redis())
        env = _process_env(
            {
                "DAGSTER_HOME": str(home),
                "DATABASE_URL": app_url,
                "TG_EXECUTOR": "celery",
                "TG_CELERY_BROKER": redis.url(0),
                **tensorguard_env(state, fleet=fleet, broker=mosquitto_broker),
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
        yield CeleryRound(
            instance=instance,
            run_ids=run_ids,
            worker_logs=worker_logs,
            fleet=fleet,
            dagster_url=dagster_url,
            app_url=app_url,
        )


def test_every_stage_succeeded_on_the_postgres_instance(celery_round: CeleryRound) -> None:
    instance = celery_round.instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
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


def test_every_run_and_materialisation_is_in_postgres(celery_round: CeleryRound) -> None:
    """Read back from PostgreSQL's own tables, not through the instance."""
    run_ids = list(celery_round.run_ids.values())
    engine = sqlalchemy.create_engine(celery_round.dagster_url)
    try:
        with engine.connect() as connection:
            runs = connection.execute(
                sqlalchemy.text("SELECT run_id, status FROM runs WHERE run_id IN :ids").bindparams(
                    sqlalchemy.bindparam("ids", expanding=True)
                ),
                {"ids": run_ids},
            ).all()
            materialised = connection.execute(
                sqlalchemy.text(
                    "SELECT DISTINCT asset_key FROM event_logs WHERE run_id IN :ids "
                    "AND dagster_event_type = 'ASSET_MATERIALIZATION'"
                ).bindparams(sqlalchemy.bindparam("ids", expanding=True)),
                {"ids": run_ids},
            ).scalars()
            keys = [AssetKey.from_db_string(key) for key in materialised]
    finally:
        engine.dispose()
    assert {row.run_id for row in runs} == set(run_ids)
    assert {row.status for row in runs} == {"SUCCESS"}
    assert None not in keys
    assert {key.to_user_string() for key in keys if key is not None} == round_asset_names()


def test_release_is_recorded_in_the_postgres_application_database(
    celery_round: CeleryRound,
) -> None:
    event = celery_round.instance.get_latest_materialization_event(AssetKey("release"))
    assert event is not None
    assert event.asset_materialization is not None
    release = {name: value.value for name, value in event.asset_materialization.metadata.items()}
    assert release["mqtt_topic"] == release_topic(celery_round.fleet, CHANNEL)
    assert current_revision(celery_round.app_url) == head_revision()
    database = FleetDatabase(celery_round.app_url)
    try:
        [row] = database.releases(celery_round.fleet, CHANNEL)
        events = [(e.action, e.actor, e.subject) for e in database.audit_events()]
    finally:
        database.close()
    assert (row.version, row.digest) == (release["version"], release["digest"])
    subject = f"release:{celery_round.fleet}/{CHANNEL}/{row.version}"
    assert ("release.published", f"dagster:{event.run_id}", subject) in events
