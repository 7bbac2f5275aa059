"""Broker access against a real Mosquitto with a password file and the shipped ACL.

The broker (``secured_mosquitto_broker``) refuses anonymous clients and enforces
deploy/mosquitto.acl: the pipeline user announces releases and reads reports; a node may
write only its own install reports and connection state. The pipeline's settings come
from ``TG_MQTT_*`` through :class:`FleetResource`, the password from ``TG_MQTT_PASSWORD``
at the moment it is needed; no password may appear in an error or a log record.
"""

from __future__ import annotations

import logging
import queue
from pathlib import Path

import pytest

from tensorguard.fleet.agent import AgentSession
from tensorguard.fleet.errors import MqttConfigError, MqttError
from tensorguard.fleet.messages import (
    ConnectionMessage,
    ConnectionState,
    InstallOutcome,
    InstallReason,
    InstallReport,
    ReleaseAnnouncement,
)
from tensorguard.fleet.mqtt import MqttConnection, MqttSettings
from tensorguard.fleet.notify import InstallReportListener, announce_release
from tensorguard.fleet.topics import connection_topic, install_report_topic, release_topic
from tensorguard_assets.resources import build_resources
from tensorguard_resources.fleet import FleetResource
from tests.fleet.releases import FleetKit
from tests.fleet.test_mqtt import announcement, unique_fleet
from tests.services.mosquitto import MosquittoBroker

PIPELINE_USER = "tensorguard-pipeline"


def passwords(broker: MosquittoBroker) -> dict[str, str]:
    """The broker's users and their passwords."""
    assert broker.access is not None
    return dict(broker.access.users)


def pipeline_fleet(
    broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str
) -> FleetResource:
    """The fleet resource as ``build_resources`` makes it from ``TG_MQTT_*``; ``env``
    overrides (``TG_MQTT_PASSWORD`` goes to the process environment, where it is read)."""
    password = env.pop("TG_MQTT_PASSWORD", passwords(broker)[PIPELINE_USER])
    if password:
        monkeypatch.setenv("TG_MQTT_PASSWORD", password)
    settings = {
        "TG_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TG_MQTT_HOST": broker.host,
        "TG_MQTT_PORT": str(broker.port),
        "TG_MQTT_USERNAME": PIPELINE_USER,
    } | env
    fleet = build_resources({name: value for name, value in settings.items() if value})["fleet"]
    assert isinstance(fleet, FleetResource)
    return fleet


def node_settings(broker: MosquittoBroker, node_id: str) -> MqttSettings:
    """A node's settings: its node id as username, its password from the password file."""
    return MqttSettings(
        host=broker.host,
        port=broker.port,
        username=node_id,
        password=passwords(broker)[node_id],  # type: ignore[arg-type]
        timeout_s=5,
    )


def report(fleet: str, node_id: str, version: int, reason: str) -> InstallReport:
    return InstallReport(
        fleet=fleet,
        channel="stable",
        node_id=node_id,
        version=version,
        outcome=InstallOutcome.INSTALLED,
        reason_code=InstallReason.INSTALLED,
        reason=reason,
    )


def first_message(settings: MqttSettings, topic: str) -> bytes:
    """Subscribe with ``settings`` and return the first (retained) payload on ``topic``."""
    received: queue.Queue[bytes] = queue.Queue()
    with MqttConnection(settings, f"reader-{topic.replace('/', '-')}") as reader:
        reader.subscribe(topic, lambda _topic, payload: received.put(payload))
        return received.get(timeout=5)


def secrets_shown(error: BaseException, caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every text a user or a log would see of ``error``, with the captured log."""
    texts = [str(error), repr(error), caplog.text]
    cause = error.__cause__ or error.__context__
    if cause is not None:
        texts += [str(cause), repr(cause)]
    return texts


def test_the_pipeline_announces_with_its_credentials_and_a_node_reads_it(
    secured_mosquitto_broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_name = unique_fleet()
    fleet = pipeline_fleet(secured_mosquitto_broker, tmp_path, monkeypatch)
    settings = fleet.mqtt
    assert settings is not None
    assert settings.username == PIPELINE_USER
    assert settings.password is not None
    sent = announcement(fleet_name)
    topic = announce_release(settings, sent)
    payload = first_message(node_settings(secured_mosquitto_broker, "robot-a"), topic)
    assert ReleaseAnnouncement.from_payload(payload) == sent


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TG_MQTT_PASSWORD": "not-the-password-0b6f"}, "TG_MQTT_PASSWORD"),
        ({"TG_MQTT_PASSWORD": ""}, "TG_MQTT_PASSWORD is not set"),
        ({"TG_MQTT_USERNAME": "", "TG_MQTT_PASSWORD": ""}, "TG_MQTT_USERNAME"),
        ({"TG_MQTT_USERNAME": "robot-a"}, "TG_MQTT_PASSWORD"),
    ],
    ids=["wrong-password", "no-password", "anonymous", "wrong-user"],
)
def test_bad_credentials_are_refused_naming_the_setting_not_the_password(
    env: dict[str, str],
    named: str,
    secured_mosquitto_broker: MosquittoBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fleet = pipeline_fleet(secured_mosquitto_broker, tmp_path, monkeypatch, **env)
    settings = fleet.mqtt
    assert settings is not None
    with pytest.raises(MqttError, match="refused the connection") as refused:
        announce_release(settings, announcement(unique_fleet()))
    assert named in str(refused.value)
    shown = secrets_shown(refused.value, caplog)
    for secret in [*passwords(secured_mosquitto_broker).values(), "not-the-password-0b6f"]:
        assert not [text for text in shown if secret in text]


def test_a_password_without_a_username_is_a_configuration_error(
    secured_mosquitto_broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = pipeline_fleet(secured_mosquitto_broker, tmp_path, monkeypatch, TG_MQTT_USERNAME="")
    with pytest.raises(MqttConfigError, match="TG_MQTT_USERNAME") as refused:
        _ = fleet.mqtt
    assert passwords(secured_mosquitto_broker)[PIPELINE_USER] not in str(refused.value)


def test_a_node_cannot_overwrite_another_nodes_retained_report(
    secured_mosquitto_broker: MosquittoBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet_name = unique_fleet()
    own_topic = install_report_topic(fleet_name, "stable", "robot-b")
    genuine = report(fleet_name, "robot-b", 3, "installed by robot-b")
    with MqttConnection(node_settings(secured_mosquitto_broker, "robot-b"), "robot-b") as node_b:
        node_b.publish(own_topic, genuine.to_payload(), retain=True)
    forged = report(fleet_name, "robot-b", 2, "forged by robot-a")
    with MqttConnection(node_settings(secured_mosquitto_broker, "robot-a"), "robot-a") as node_a:
        with pytest.raises(MqttError, match="refused the message"):
            node_a.publish(own_topic, forged.to_payload(), retain=True)
        # Its own report topic is writable (the ACL is not simply closed).
        node_a.publish(
            install_report_topic(fleet_name, "stable", "robot-a"),
            report(fleet_name, "robot-a", 3, "installed by robot-a").to_payload(),
            retain=True,
        )
        # Nor may a node announce a release.
        with pytest.raises(MqttError, match="refused the message"):
            node_a.publish(
                release_topic(fleet_name, "stable"), announcement(fleet_name).to_payload()
            )
    settings = pipeline_fleet(secured_mosquitto_broker, tmp_path, monkeypatch).mqtt
    assert settings is not None
    with InstallReportListener(settings, fleet_name) as listener:
        retained = {}
        for _ in range(2):
            received = listener.next_report(timeout=5)
            retained[received.node_id] = received
    assert retained["robot-b"] == genuine
    assert retained["robot-a"].reason == "installed by robot-a"


def test_the_agent_takes_its_password_from_the_environment(
    secured_mosquitto_broker: MosquittoBroker,
    kit: FleetKit,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mqtt = {
        "host": secured_mosquitto_broker.host,
        "port": secured_mosquitto_broker.port,
        "username": "robot-a",
        "timeout_s": 5,
    }
    agent = kit.agent(tmp_path / "node", node_id="robot-a", mqtt=mqtt)
    with pytest.raises(MqttError, match="TG_MQTT_PASSWORD is not set"):
        AgentSession(agent).connect()
    monkeypatch.setenv("TG_MQTT_PASSWORD", passwords(secured_mosquitto_broker)["robot-a"])
    with AgentSession(agent):
        pipeline = pipeline_fleet(secured_mosquitto_broker, tmp_path, monkeypatch).mqtt
        assert pipeline is not None
        state = first_message(pipeline, connection_topic(kit.fleet, "robot-a"))
    assert ConnectionMessage.from_payload(state).state is ConnectionState.ONLINE


def test_an_unreadable_tls_file_names_the_setting(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    settings = MqttSettings(username="robot-a", tls_ca_file=missing)
    with pytest.raises(MqttConfigError, match=f"tls_ca_file={missing}"):
        MqttConnection(settings, "tls-probe")
    with pytest.raises(ValueError, match="both tls_cert_file and tls_key_file"):
        MqttSettings(tls_cert_file=tmp_path / "client.pem")
