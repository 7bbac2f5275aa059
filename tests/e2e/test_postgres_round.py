"""The full round on PostgreSQL: Dagster instance storage via dagster-postgres and the
application database (releases, audit log) in its own PostgreSQL database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
from dagster import AssetKey, DagsterInstance, instance_for_test

from tensorguard.fleet.db import FleetDatabase, current_revision, head_revision
from tensorguard.fleet.topics import release_topic
from tests.e2e.conftest import unique_fleet
from tests.e2e.rounds import (
    ROUND_RELEASE_JOB,
    SETUP_JOB,
    StageRun,
    base_model_config,
    development_process_env,
    failed_stages,
    round_asset_names,
    run_full_round,
    tensorguard_env,
)
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import PostgresServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROUND = "2026-11-24"
CHANNEL = "stable"


@dataclass(frozen=True)
class PostgresRound:
    """A full round whose instance storage and application database are PostgreSQL."""

    instance: DagsterInstance
    fleet: str
    dagster_url: str
    app_url: str
    stages: dict[str, StageRun]


def create_database(server: PostgresServer, name: str) -> str:
    """Create database ``name`` on the test server; return its URL."""
    engine = sqlalchemy.create_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()
    return f"postgresql://{server.user}@{server.host}:{server.port}/{name}"


@pytest.fixture(scope="module")
def postgres_round(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    mosquitto_broker: MosquittoBroker,
    prebuilt_base_model: Path,
    demo_sites: list[str],
) -> Iterator[PostgresRound]:
    """One full round, run once for this module, entirely on PostgreSQL."""
    fleet = unique_fleet("e2e-pg")
    app_url = create_database(postgres_server, f"tg_e2e_app_{secrets.token_hex(4)}")
    env = tensorguard_env(
        tmp_path_factory.mktemp("postgres-round"), fleet=fleet, broker=mosquitto_broker
    )
    overrides = {"storage": {"postgres": {"postgres_url": postgres_server.url}}}
    with (
        development_process_env(),
        pytest.MonkeyPatch.context() as patch,
        instance_for_test(overrides=overrides) as instance,
    ):
        # The fleet resource reads DATABASE_URL from the run's environment, never from config.
        patch.setenv("DATABASE_URL", app_url)
        stages = run_full_round(
            instance,
            env,
            ROUND,
            demo_sites,
            run_config={SETUP_JOB: base_model_config(prebuilt_base_model)},
        )
        assert all(run.success for run in stages.values()), failed_stages(stages)
        yield PostgresRound(instance, fleet, postgres_server.url, app_url, stages)


def test_the_instance_stores_runs_and_events_in_postgres(postgres_round: PostgresRound) -> None:
    instance = postgres_round.instance
    assert type(instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"


def test_every_run_and_materialisation_is_in_postgres(postgres_round: PostgresRound) -> None:
    run_jobs = {run.run_id: run.job_name for run in postgres_round.stages.values()}
    engine = sqlalchemy.create_engine(postgres_round.dagster_url)
    try:
        with engine.connect() as connection:
            runs = connection.execute(
                sqlalchemy.text(
                    "SELECT run_id, pipeline_name, status FROM runs WHERE run_id IN :ids"
                ).bindparams(sqlalchemy.bindparam("ids", expanding=True)),
                {"ids": list(run_jobs)},
            ).all()
            materialised = connection.execute(
                sqlalchemy.text(
                    "SELECT DISTINCT asset_key FROM event_logs WHERE run_id IN :ids "
                    "AND dagster_event_type = 'ASSET_MATERIALIZATION'"
                ).bindparams(sqlalchemy.bindparam("ids", expanding=True)),
                {"ids": list(run_jobs)},
            ).scalars()
            keys = [AssetKey.from_db_string(key) for key in materialised]
    finally:
        engine.dispose()
    assert {row.run_id: row.pipeline_name for row in runs} == run_jobs
    assert {row.status for row in runs} == {"SUCCESS"}
    assert {key.to_user_string() for key in keys if key is not None} == round_asset_names()
    assert None not in keys


def test_release_is_recorded_in_the_postgres_application_database(
    postgres_round: PostgresRound,
) -> None:
    release_run = postgres_round.stages[ROUND_RELEASE_JOB]
    release = release_run.metadata("release")
    assert release["mqtt_topic"] == release_topic(postgres_round.fleet, CHANNEL)
    assert current_revision(postgres_round.app_url) == head_revision()
    database = FleetDatabase(postgres_round.app_url)
    try:
        [row] = database.releases(postgres_round.fleet, CHANNEL)
        events = [(e.action, e.actor, e.subject) for e in database.audit_events()]
    finally:
        database.close()
    assert (row.version, row.digest) == (release["version"], release["digest"])
    subject = f"release:{postgres_round.fleet}/{CHANNEL}/{row.version}"
    assert ("release.published", f"dagster:{release_run.run_id}", subject) in events
