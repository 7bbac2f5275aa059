"""MQTT notification against a real Mosquitto broker."""

from __future__ import annotations

import queue
import secrets
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tensorguard.fleet.errors import FleetNameError, MqttError
from tensorguard.fleet.messages import (
    InstallOutcome,
    InstallReason,
    InstallReport,
    MessageError,
    ReleaseAnnouncement,
)
from tensorguard.fleet.mqtt import MqttConnection, MqttSettings
from tensorguard.fleet.notify import (
    InstallReportListener,
    announce_release,
    announcement_for,
    publish_install_report,
)
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.fleet.topics import (
    connection_topic,
    install_report_filter,
    install_report_topic,
    release_topic,
)
from tensorguard.service.client import FleetClientError
from tests.services.mosquitto import MosquittoBroker
from tests.services.process import free_port


def unique_fleet() -> str:
    return f"fleet-{secrets.token_hex(4)}"


def settings_for(broker: MosquittoBroker) -> MqttSettings:
    return MqttSettings(host=broker.host, port=broker.port, timeout_s=5)


def announcement(fleet: str, version: int = 3) -> ReleaseAnnouncement:
    return ReleaseAnnouncement(
        fleet=fleet,
        channel="stable",
        version=version,
        digest="ab" * 32,
        size=1234,
        location="file:///srv/registry/packages/stable/stable-3.tgsp",
        created=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
    )


def receive_with_raw_paho(
    broker: MosquittoBroker, topic: str, timeout: float = 5.0
) -> paho.MQTTMessage:
    """Subscribe with a plain paho client (independent of our wrapper); return one message."""
    received: queue.Queue[paho.MQTTMessage] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
    client.on_message = lambda _c, _u, message: received.put(message)
    client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=1)
    client.connect(broker.host, broker.port)
    client.loop_start()
    try:
        return received.get(timeout=timeout)
    finally:
        client.disconnect()
        client.loop_stop()


def test_topic_layout() -> None:
    assert release_topic("plant-a", "stable") == "tensorguard/v1/plant-a/stable/release"
    assert (
        install_report_topic("plant-a", "stable", "robot-7")
        == "tensorguard/v1/plant-a/stable/nodes/robot-7/install"
    )
    assert install_report_filter("plant-a") == "tensorguard/v1/plant-a/+/nodes/+/install"
    assert paho.topic_matches_sub(
        install_report_filter("plant-a"), install_report_topic("plant-a", "beta", "r1")
    )
    assert connection_topic("plant-a", "robot-7") == "tensorguard/v1/plant-a/_connection/robot-7"
    for bad in ("+", "#", "a/b", "", "Upper"):
        with pytest.raises(FleetNameError):
            release_topic("plant-a", bad)


def test_announcement_is_retained_qos1_and_reaches_a_late_subscriber(
    mosquitto_broker: MosquittoBroker,
) -> None:
    fleet = unique_fleet()
    sent = announcement(fleet)
    topic = announce_release(settings_for(mosquitto_broker), sent)
    assert topic == f"tensorguard/v1/{fleet}/stable/release"
    # The publisher has disconnected; a subscriber that connects only now still gets it.
    message = receive_with_raw_paho(mosquitto_broker, topic)
    assert message.retain
    assert message.qos == 1
    assert ReleaseAnnouncement.from_payload(bytes(message.payload)) == sent


def test_a_newer_announcement_replaces_the_retained_one(mosquitto_broker: MosquittoBroker) -> None:
    fleet = unique_fleet()
    settings = settings_for(mosquitto_broker)
    announce_release(settings, announcement(fleet, version=3))
    announce_release(settings, announcement(fleet, version=4))
    message = receive_with_raw_paho(mosquitto_broker, release_topic(fleet, "stable"))
    assert ReleaseAnnouncement.from_payload(bytes(message.payload)).version == 4


def test_unreachable_broker_raises_a_clear_error() -> None:
    settings = MqttSettings(host="127.0.0.1", port=free_port(), timeout_s=2)
    with pytest.raises(MqttError, match=r"cannot reach the MQTT broker at 127\.0\.0\.1:\d+"):
        announce_release(settings, announcement(unique_fleet()))


class _RefusingConnection(MqttConnection):
    """Records connect/subscribe/disconnect; the broker refuses one topic filter."""

    def __init__(self, refused: str) -> None:
        super().__init__(MqttSettings(), "recording")
        self.refused = refused
        self.calls: list[str] = []

    def connect(self) -> None:
        self.calls.append("connect")

    def subscribe(self, topic_filter: str, handler: object, *, qos: int = 1) -> None:
        del handler  # MqttConnection.subscribe's signature; nothing is delivered here
        self.calls.append(f"subscribe {topic_filter} qos={qos}")
        if topic_filter == self.refused:
            raise MqttError(f"refused {topic_filter}")

    def disconnect(self) -> None:
        self.calls.append("disconnect")


def test_connect_subscribed_leaves_no_half_subscribed_session() -> None:
    connection = _RefusingConnection(refused="b")
    with pytest.raises(MqttError, match="refused b"):
        connection.connect_subscribed(["a", "b", "c"], lambda _topic, _payload: None)
    assert connection.calls == ["connect", "subscribe a qos=1", "subscribe b qos=1", "disconnect"]
    accepted = _RefusingConnection(refused="none")
    accepted.connect_subscribed(["a", "c"], lambda _topic, _payload: None)
    assert accepted.calls == ["connect", "subscribe a qos=1", "subscribe c qos=1"]


def test_password_is_not_in_repr() -> None:
    settings = MqttSettings(username="ops", password="hunter2-secret")  # type: ignore[arg-type]
    assert "hunter2-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(MqttConnection(settings, "c1"))


def test_install_reports_reach_the_listener(mosquitto_broker: MosquittoBroker) -> None:
    fleet = unique_fleet()
    settings = settings_for(mosquitto_broker)
    report = InstallReport(
        fleet=fleet,
        channel="stable",
        node_id="robot-1",
        version=5,
        digest="cd" * 32,
        outcome=InstallOutcome.REJECTED,
        reason_code=InstallReason.ROLLBACK,
        reason="version 5 is not above the installed version 6",
    )
    with InstallReportListener(settings, fleet) as listener:
        with MqttConnection(settings, "robot-1") as connection:
            connection.publish(install_report_topic(fleet, "stable", "robot-1"), b"not json", qos=1)
            publish_install_report(connection, report)
        received = listener.wait_for("robot-1", 5, timeout=5)
    assert received == report
    with InstallReportListener(settings, fleet) as listener:
        # Retained: a new listener sees the node's last report at once, then nothing more.
        assert listener.next_report(timeout=5) == report
        with pytest.raises(MqttError, match="no install report"):
            listener.next_report(timeout=0.3)


def test_announcement_for_a_registry_release(tmp_path: Path) -> None:
    package = tmp_path / "p.tgsp"
    package.write_bytes(b"x" * 100)
    registry = LocalRegistry(tmp_path / "registry")
    record = registry.publish(package, "stable", 2)
    message = announcement_for(registry, record, "plant-a", gate_decision_digest="ef" * 32)
    assert (message.version, message.digest, message.size) == (2, record.digest, 100)
    assert message.location == registry.location(record)
    assert ReleaseAnnouncement.from_payload(message.to_payload()) == message
    served = announcement_for(registry, record, "plant-a", service_url="http://127.0.0.1:8080")
    assert served.location == "http://127.0.0.1:8080/v1/packages/stable/2"
    for bad in ("ftp://fleet", "http://fleet/prefix", "fleet:8080"):
        with pytest.raises(FleetClientError, match="http"):
            announcement_for(registry, record, "plant-a", service_url=bad)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"[]",
        b'{"format": "tensorguard.release/v1"}',
        announcement("f").to_payload().replace(b'"version":3', b'"version":0'),
        announcement("f").to_payload().replace(b"}", b',"extra":1}'),
        announcement("f").to_payload().replace(b"2025-01-02T03:04:05Z", b"2025-01-02T03:04:05"),
        b"x" * 70_000,
    ],
)
def test_invalid_announcements_are_refused(payload: bytes) -> None:
    with pytest.raises(MessageError):
        ReleaseAnnouncement.from_payload(payload)
