"""Announcement outbox (#18 item 4): the broker is down during a release; the release is
recorded, its announcement queued in the application DB, delivered when the broker is
back, and the edge agent installs it. Real Mosquitto stopped and restarted on its port."""

from __future__ import annotations

from pathlib import Path

from tensorguard.fleet.agent import run_once
from tensorguard.fleet.db import (
    OUTBOX_DELIVERED,
    OUTBOX_PENDING,
    OUTBOX_SUPERSEDED,
    FleetDatabase,
    migrate,
    sqlite_url,
)
from tensorguard.fleet.messages import InstallOutcome, ReleaseAnnouncement
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.outbox import (
    AnnouncementOutcome,
    deliver_announcements,
    outbox_row,
    pending_announcements,
    record_release_and_announce,
)
from tensorguard.fleet.registry import ReleaseRecord
from tensorguard.fleet.topics import release_topic
from tests.fleet.releases import FleetKit
from tests.fleet.test_mqtt import receive_with_raw_paho
from tests.services.mosquitto import MosquittoBroker, running_mosquitto
from tests.services.process import free_port

GATE = "cd" * 32


def _database(tmp_path: Path) -> FleetDatabase:
    url = sqlite_url(tmp_path / "fleet.db")
    migrate(url)
    return FleetDatabase(url)


def _settings(port: int) -> MqttSettings:
    return MqttSettings(host="127.0.0.1", port=port, timeout_s=2)


def _release(kit: FleetKit, version: int) -> ReleaseRecord:
    return kit.registry.publish(kit.build(version), kit.channel, version)


def _record(kit: FleetKit, database: FleetDatabase, version: int, port: int) -> AnnouncementOutcome:
    return record_release_and_announce(
        kit.registry,
        _release(kit, version),
        database_url=database.url,
        fleet=kit.fleet,
        mqtt=_settings(port),
        gate_decision_digest=GATE,
        actor="test",
    )


def _retained(broker: MosquittoBroker, kit: FleetKit) -> ReleaseAnnouncement:
    message = receive_with_raw_paho(broker, release_topic(kit.fleet, kit.channel))
    assert message.retain
    return ReleaseAnnouncement.from_payload(bytes(message.payload))


def test_a_release_while_the_broker_is_down_is_queued_then_delivered_and_installed(
    kit: FleetKit, tmp_path: Path
) -> None:
    database = _database(tmp_path)
    port = free_port()
    with running_mosquitto(port=port):
        pass  # the broker ran on this port and is now stopped: the release finds it down
    outcome = _record(kit, database, 1, port)
    assert outcome.state == "queued"
    assert "cannot reach the MQTT broker" in outcome.detail
    # The release is recorded and its announcement waits, with the reason and a count.
    [release] = database.releases(kit.fleet, kit.channel)
    assert release.version == 1
    row = outbox_row(database, kit.fleet, kit.channel, 1)
    assert row is not None
    assert row.state == OUTBOX_PENDING
    assert row.attempts == 1
    assert "cannot reach" in (row.last_error or "")
    # Still down: a retry keeps it pending and counts the attempt.
    assert deliver_announcements(database, _settings(port)).still_pending == [
        (kit.fleet, kit.channel, 1)
    ]
    with running_mosquitto(port=port) as broker:
        report = deliver_announcements(database, _settings(port))
        assert report.delivered == [(kit.fleet, kit.channel, 1)]
        assert report.error is None
        delivered = outbox_row(database, kit.fleet, kit.channel, 1)
        assert delivered is not None
        assert delivered.state == OUTBOX_DELIVERED
        assert delivered.attempts == 2
        assert delivered.delivered_at is not None
        assert _retained(broker, kit).version == 1
        assert pending_announcements(database) == []
        # Nothing left to deliver: a second pass publishes nothing.
        again = deliver_announcements(database, _settings(port))
        assert (again.delivered, again.still_pending) == ([], [])
        # The agent, connecting now, finds the retained announcement and installs it.
        agent = kit.agent(tmp_path / "node", mqtt={"host": broker.host, "port": port})
        reports = run_once(agent, timeout_s=10)
    assert [r.outcome for r in reports] == [InstallOutcome.INSTALLED]
    assert agent.installed_version() == 1
    database.close()


def test_only_the_newest_queued_release_of_a_channel_is_announced(
    kit: FleetKit, tmp_path: Path
) -> None:
    database = _database(tmp_path)
    port = free_port()
    for version in (1, 2):
        assert _record(kit, database, version, port).state == "queued"
    with running_mosquitto(port=port) as broker:
        report = deliver_announcements(database, _settings(port))
        assert report.delivered == [(kit.fleet, kit.channel, 2)]
        assert report.superseded == [(kit.fleet, kit.channel, 1)]
        # The retained topic holds v2: announcing v1 after it would hide v2.
        assert _retained(broker, kit).version == 2
        old = outbox_row(database, kit.fleet, kit.channel, 1)
        assert old is not None
        assert old.state == OUTBOX_SUPERSEDED
        # A release delivered directly while up: its row is delivered at once.
        assert _record(kit, database, 3, port).state == "delivered"
        assert _retained(broker, kit).version == 3
    database.close()


def test_without_a_broker_or_for_a_backfill_nothing_is_queued(
    kit: FleetKit, tmp_path: Path
) -> None:
    database = _database(tmp_path)
    outcome = record_release_and_announce(
        kit.registry,
        _release(kit, 1),
        database_url=database.url,
        fleet=kit.fleet,
        mqtt=None,
        gate_decision_digest=GATE,
        actor="test",
    )
    assert (outcome.state, outcome.topic) == ("not_announced", None)
    assert pending_announcements(database) == []
    assert [r.version for r in database.releases(kit.fleet, kit.channel)] == [1]
    database.close()
