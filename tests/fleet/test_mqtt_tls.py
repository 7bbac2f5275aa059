"""Mutual TLS against a real Mosquitto: the pipeline's client certificate is its identity.

The broker's only listener speaks TLS, requires a client certificate from the test CA and
takes the certificate's common name as the username that deploy/mosquitto.acl checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorguard.fleet.errors import MqttError
from tensorguard.fleet.mqtt import MqttConnection, MqttSettings
from tensorguard.fleet.notify import announce_release
from tensorguard.fleet.topics import install_report_topic
from tensorguard_assets.resources import build_resources
from tensorguard_resources.fleet import FleetResource
from tests.conftest import FLEET_ACL_FILE
from tests.fleet.test_mqtt import announcement, unique_fleet
from tests.services.mosquitto import BrokerAccess, BrokerTls, MosquittoBroker, running_mosquitto
from tests.services.tls import CertificateAuthority


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return CertificateAuthority(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def tls_broker(authority: CertificateAuthority) -> Iterator[MosquittoBroker]:
    server = authority.issue("127.0.0.1", server=True)
    tls = BrokerTls(authority.ca.cert_file, server.cert_file, server.key_file)
    access = BrokerAccess(users={}, acl_file=FLEET_ACL_FILE)
    with running_mosquitto(access=access, tls=tls) as broker:
        yield broker


def tls_fleet(broker: MosquittoBroker, tmp_path: Path, **env: str) -> FleetResource:
    settings = {
        "TG_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TG_MQTT_HOST": broker.host,
        "TG_MQTT_PORT": str(broker.port),
    } | env
    fleet = build_resources(settings)["fleet"]
    assert isinstance(fleet, FleetResource)
    return fleet


def certified_settings(
    broker: MosquittoBroker, authority: CertificateAuthority, tmp_path: Path, identity: str
) -> MqttSettings:
    """The fleet resource's broker settings with a client certificate for ``identity``."""
    client = authority.issue(identity)
    settings = tls_fleet(
        broker,
        tmp_path,
        TG_MQTT_CA_FILE=str(authority.ca.cert_file),
        TG_MQTT_CERT_FILE=str(client.cert_file),
        TG_MQTT_KEY_FILE=str(client.key_file),
    ).mqtt
    assert settings is not None
    return settings


def test_the_pipeline_announces_with_its_client_certificate(
    tls_broker: MosquittoBroker, authority: CertificateAuthority, tmp_path: Path
) -> None:
    settings = certified_settings(tls_broker, authority, tmp_path, "tensorguard-pipeline")
    assert settings.uses_tls
    sent = announcement(unique_fleet())
    assert announce_release(settings, sent).endswith("/release")


def test_without_a_client_certificate_the_connection_fails(
    tls_broker: MosquittoBroker, authority: CertificateAuthority, tmp_path: Path
) -> None:
    fleet = tls_fleet(tls_broker, tmp_path, TG_MQTT_CA_FILE=str(authority.ca.cert_file))
    settings = fleet.mqtt
    assert settings is not None
    with pytest.raises(MqttError):
        announce_release(settings.model_copy(update={"timeout_s": 3}), announcement(unique_fleet()))


def test_the_certificate_name_is_the_identity_the_acl_checks(
    tls_broker: MosquittoBroker, authority: CertificateAuthority, tmp_path: Path
) -> None:
    settings = certified_settings(tls_broker, authority, tmp_path, "robot-a")
    fleet_name = unique_fleet()
    with MqttConnection(settings, "robot-a-tls") as connection:
        connection.publish(install_report_topic(fleet_name, "stable", "robot-a"), b"{}")
        with pytest.raises(MqttError, match="refused the message"):
            connection.publish(install_report_topic(fleet_name, "stable", "robot-b"), b"{}")
