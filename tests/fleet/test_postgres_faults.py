"""PostgreSQL stopped and restarted under the release recipe (#18 item 4): recording fails
clearly, nothing is half-written (a release row always has its queued announcement), and
the re-run completes. A dedicated server, never the shared session one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text

from tensorguard.fleet.db import FleetDatabase, migrate
from tensorguard.fleet.errors import FleetDatabaseError
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.outbox import outbox_row, record_release_and_announce
from tests.fleet.releases import FleetKit
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import RestartablePostgres, running_restartable_postgres

pytestmark = pytest.mark.postgres

GATE = "cd" * 32


@pytest.fixture
def dedicated_postgres() -> Iterator[RestartablePostgres]:
    with running_restartable_postgres() as server:
        yield server


def table_counts(url: str) -> tuple[int, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            releases = connection.execute(text("SELECT count(*) FROM releases")).scalar_one()
            queued = connection.execute(
                text("SELECT count(*) FROM announcement_outbox")
            ).scalar_one()
    finally:
        engine.dispose()
    return int(releases), int(queued)


def test_postgres_down_while_recording_a_release_fails_clearly_and_a_rerun_completes(
    dedicated_postgres: RestartablePostgres,
    kit: FleetKit,
    mosquitto_broker: MosquittoBroker,
) -> None:
    url = dedicated_postgres.server.url
    migrate(url)
    settings = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port, timeout_s=5)
    record = kit.registry.publish(kit.build(1), kit.channel, 1)

    def record_and_announce() -> str:
        outcome = record_release_and_announce(
            kit.registry,
            record,
            database_url=url,
            fleet=kit.fleet,
            mqtt=settings,
            gate_decision_digest=GATE,
            actor="test",
        )
        return outcome.state

    dedicated_postgres.stop()  # immediate shutdown: the server is gone mid-flight
    with pytest.raises(FleetDatabaseError) as refused:
        record_and_announce()
    message = str(refused.value)
    assert "fleet database operation failed" in message
    assert f":{dedicated_postgres.server.port}/" in message  # says which database

    dedicated_postgres.start()
    assert table_counts(url) == (0, 0)  # nothing half-written
    assert record_and_announce() == "delivered"  # the re-run completes
    assert record_and_announce() == "delivered"  # and is idempotent
    assert table_counts(url) == (1, 1)
    database = FleetDatabase(url)
    try:
        [release] = database.releases(kit.fleet, kit.channel)
        assert release.digest == record.digest
        row = outbox_row(database, kit.fleet, kit.channel, 1)
        assert row is not None
        assert row.state == "delivered"
    finally:
        database.close()


def test_postgres_restarted_under_an_open_connection_pool_is_survived(
    dedicated_postgres: RestartablePostgres, kit: FleetKit
) -> None:
    """A long-lived process (the collector, the fleet service) keeps its engine: after a
    restart, stale pooled connections are replaced (pool_pre_ping), not reused."""
    url = dedicated_postgres.server.url
    migrate(url)
    database = FleetDatabase(url)
    try:
        database.register_node("robot-1", kit.fleet, kit.channel, actor="test")
        dedicated_postgres.stop()
        dedicated_postgres.start()
        node = database.node("robot-1")  # the pooled connection died with the server
        assert node is not None
        assert node.fleet == kit.fleet
        dedicated_postgres.stop()
        with pytest.raises(FleetDatabaseError, match="fleet database operation failed"):
            database.node("robot-1")
        dedicated_postgres.start()
        assert database.node("robot-1") is not None
    finally:
        database.close()
