"""The fleet collector (#17 item 4): node registrations and install reports from a real,
password- and ACL-protected Mosquitto into the application DB (SQLite and PostgreSQL),
each stored once however often the retained report is delivered, with a signed log."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from tensorguard.cli import main
from tensorguard.crypto import CompositeSigningKey
from tensorguard.fleet.collector import (
    CollectorAuditLog,
    CollectorError,
    CollectorService,
    FleetCollector,
    Outcome,
    enrolled_recipients,
)
from tensorguard.fleet.db import FleetDatabase, migrate, sqlite_url
from tensorguard.fleet.messages import InstallOutcome, InstallReason, InstallReport
from tensorguard.fleet.mqtt import MqttConnection, MqttSettings
from tensorguard.fleet.notify import publish_install_report
from tensorguard.fleet.provisioning import PUBLIC_KEY_SUFFIX
from tensorguard.fleet.topics import install_report_topic
from tensorguard.tgsp._keyfiles import write_key_file
from tests.fleet.releases import Keys
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import PostgresServer, fresh_database

PIPELINE_USER = "tensorguard-pipeline"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[FleetDatabase]:
    """A migrated application DB: a SQLite file or a fresh database on the test server."""
    if request.param == "sqlite":
        url = sqlite_url(tmp_path / "fleet.db")
        migrate(url)
        handle = FleetDatabase(url)
        yield handle
        handle.close()
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with fresh_database(server) as url:
        migrate(url)
        handle = FleetDatabase(url)
        yield handle
        handle.close()


@pytest.fixture(scope="module")
def audit_key() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


def settings_for(broker: MosquittoBroker, user: str) -> MqttSettings:
    assert broker.access is not None
    return MqttSettings(
        host=broker.host,
        port=broker.port,
        username=user,
        password=SecretStr(broker.access.users[user]),
        timeout_s=5,
    )


def report(fleet: str, node_id: str, version: int) -> InstallReport:
    return InstallReport(
        fleet=fleet,
        channel="stable",
        node_id=node_id,
        version=version,
        digest="ab" * 32,
        outcome=InstallOutcome.INSTALLED,
        reason_code=InstallReason.INSTALLED,
        reason=f"installed version {version}",
    )


def publish_as_node(broker: MosquittoBroker, sent: InstallReport) -> None:
    """The node publishes its report (retained) with its own broker credentials."""
    with MqttConnection(settings_for(broker, sent.node_id), f"node-{secrets.token_hex(3)}") as c:
        publish_install_report(c, sent)


def enrol(recipients: Path, node_id: str, keys: Keys) -> str:
    recipients.mkdir(parents=True, exist_ok=True)
    public = keys.node.public_key()
    write_key_file(recipients / f"{node_id}{PUBLIC_KEY_SUFFIX}", public)
    return public.fingerprint()


def collector_for(
    database: FleetDatabase, fleet: str, tmp_path: Path, key: CompositeSigningKey
) -> FleetCollector:
    return FleetCollector(
        database,
        fleet,
        audit=CollectorAuditLog(tmp_path / "audit" / "collector.jsonl", key),
        recipient_fingerprint=enrolled_recipients(tmp_path / "recipients"),
        default_channel="stable",
    )


def collect(collector: FleetCollector, broker: MosquittoBroker, seconds: float = 2.0) -> None:
    """One collector session as the pipeline user, for ``seconds``."""
    service = CollectorService(collector, settings_for(broker, PIPELINE_USER))
    service.run(threading.Event(), duration_s=seconds)


def test_registrations_and_reports_are_stored_once_with_a_signed_log(
    database: FleetDatabase,
    secured_mosquitto_broker: MosquittoBroker,
    tmp_path: Path,
    fleet_keys: Keys,
    audit_key: CompositeSigningKey,
) -> None:
    fleet = f"fleet-{secrets.token_hex(4)}"
    fingerprint = enrol(tmp_path / "recipients", "robot-a", fleet_keys)
    sent = report(fleet, "robot-a", 1)
    publish_as_node(secured_mosquitto_broker, sent)
    publish_as_node(secured_mosquitto_broker, report(fleet, "robot-b", 1))  # not enrolled

    first = collector_for(database, fleet, tmp_path, audit_key)
    collect(first, secured_mosquitto_broker)
    assert first.stats.counts == {"stored": 1, "refused": 1}
    node = database.node("robot-a")
    assert node is not None
    assert (node.fleet, node.channel, node.recipient_fingerprint) == (fleet, "stable", fingerprint)
    assert node.installed_version == 1
    [stored] = database.install_reports("robot-a")
    assert (stored.version, stored.outcome, stored.reported_at) == (1, "installed", sent.timestamp)
    assert database.node("robot-b") is None  # an unknown node adds no rows

    # A restart: the broker delivers the retained reports again; nothing is stored twice.
    second = collector_for(database, fleet, tmp_path, audit_key)
    collect(second, secured_mosquitto_broker)
    assert second.stats.counts == {"duplicate": 1, "refused": 1}
    assert len(database.install_reports("robot-a")) == 1
    records = second.audit.records()  # signatures and the hash chain verified
    assert [record["event"] for record in records] == ["node-registered", "install-report"]
    assert records[1]["details"]["version"] == 1
    assert records[1]["details"]["node_id"] == "robot-a"

    # A new report (another version) is stored; the first stays.
    publish_as_node(secured_mosquitto_broker, report(fleet, "robot-a", 2))
    third = collector_for(database, fleet, tmp_path, audit_key)
    collect(third, secured_mosquitto_broker)
    assert third.stats.counts.get("stored") == 1
    assert [r.version for r in database.install_reports("robot-a")] == [1, 2]
    assert len(third.audit.records()) == 3


def test_messages_that_lie_about_their_topic_or_fleet_are_ignored(
    tmp_path: Path, fleet_keys: Keys, audit_key: CompositeSigningKey
) -> None:
    url = sqlite_url(tmp_path / "fleet.db")
    migrate(url)
    database = FleetDatabase(url)
    enrol(tmp_path / "recipients", "robot-a", fleet_keys)
    collector = collector_for(database, "plant-a", tmp_path, audit_key)
    claimed = report("plant-a", "robot-a", 1)
    # robot-b's topic carrying a report that claims to be robot-a's.
    assert (
        collector.handle(install_report_topic("plant-a", "stable", "robot-b"), claimed.to_payload())
        is Outcome.INVALID
    )
    other_fleet = report("plant-b", "robot-a", 1)
    topic = install_report_topic("plant-b", "stable", "robot-a")
    assert collector.handle(topic, other_fleet.to_payload()) is Outcome.INVALID
    assert collector.handle(topic, b"{not json") is Outcome.INVALID
    assert database.node("robot-a") is None
    topic = install_report_topic("plant-a", "stable", "robot-a")
    assert collector.handle(topic, claimed.to_payload()) is Outcome.STORED
    assert collector.handle(topic, claimed.to_payload()) is Outcome.DUPLICATE
    assert len(database.install_reports("robot-a")) == 1
    database.close()


def test_a_crash_between_database_and_log_is_completed_on_redelivery(
    tmp_path: Path, fleet_keys: Keys, audit_key: CompositeSigningKey
) -> None:
    url = sqlite_url(tmp_path / "fleet.db")
    migrate(url)
    database = FleetDatabase(url)
    enrol(tmp_path / "recipients", "robot-a", fleet_keys)
    sent = report("plant-a", "robot-a", 1)
    database.register_node("robot-a", "plant-a", "stable", actor="test")
    database.store_install_report(sent)  # stored, then the process died before the log
    collector = collector_for(database, "plant-a", tmp_path, audit_key)
    topic = install_report_topic("plant-a", "stable", "robot-a")
    assert collector.handle(topic, sent.to_payload()) is Outcome.STORED
    assert len(database.install_reports("robot-a")) == 1
    assert [r["event"] for r in collector.audit.records()] == ["node-registered", "install-report"]
    database.close()


def test_the_audit_log_refuses_another_key_and_a_tampered_record(
    tmp_path: Path, audit_key: CompositeSigningKey
) -> None:
    path = tmp_path / "audit.jsonl"
    log = CollectorAuditLog(path, audit_key)
    assert log.append_once("k1", "install-report", {"version": 1})
    assert not log.append_once("k1", "install-report", {"version": 1})
    with pytest.raises(CollectorError, match="not the key pinned"):
        CollectorAuditLog(path, CompositeSigningKey.generate())
    document = json.loads(path.read_text().splitlines()[0])
    document["record"]["details"]["version"] = 2
    path.write_text(json.dumps(document) + "\n")
    with pytest.raises(CollectorError, match="not signed by"):
        CollectorAuditLog(path, audit_key)


def test_fleet_collect_command_runs_and_refuses_missing_settings(
    secured_mosquitto_broker: MosquittoBroker,
    tmp_path: Path,
    fleet_keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert secured_mosquitto_broker.access is not None
    url = sqlite_url(tmp_path / "fleet.db")
    fleet = f"fleet-{secrets.token_hex(4)}"
    monkeypatch.setenv("TG_KEY_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("TG_KEY_MASTER", secrets.token_hex(32))
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("TG_FLEET", fleet)
    monkeypatch.setenv("TG_FLEET_RECIPIENTS_DIR", str(tmp_path / "recipients"))
    assert main(["fleet", "collect", "--duration", "1"]) == 3  # no TG_MQTT_HOST
    assert "TG_MQTT_HOST is not set" in capsys.readouterr().err
    monkeypatch.setenv("TG_MQTT_HOST", secured_mosquitto_broker.host)
    monkeypatch.setenv("TG_MQTT_PORT", str(secured_mosquitto_broker.port))
    monkeypatch.setenv("TG_MQTT_USERNAME", PIPELINE_USER)
    monkeypatch.setenv("TG_MQTT_PASSWORD", secured_mosquitto_broker.access.users[PIPELINE_USER])
    assert main(["fleet", "collect", "--migrate", "--duration", "1"]) == 12  # no audit key
    assert "fleet-collector-audit" in capsys.readouterr().err
    assert main(["keys", "generate", "--name", "fleet-collector-audit"]) == 0
    enrol(tmp_path / "recipients", "robot-a", fleet_keys)
    publish_as_node(secured_mosquitto_broker, report(fleet, "robot-a", 3))
    audit = tmp_path / "audit.jsonl"
    assert main(["fleet", "collect", "--audit-log", str(audit), "--duration", "2"]) == 0
    out = capsys.readouterr().out
    assert "collector stopped: stored 1" in out
    assert secured_mosquitto_broker.access.users[PIPELINE_USER] not in out
    database = FleetDatabase(url)
    assert [r.version for r in database.install_reports("robot-a")] == [3]
    database.close()
    assert len(audit.read_text().splitlines()) == 2
