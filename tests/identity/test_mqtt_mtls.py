"""Mutual TLS against a real Mosquitto with certificates from the fleet CA.

The broker's certificate is a service certificate (serverAuth, IP SAN 127.0.0.1) from the
CA; its ``cafile`` is the CA bundle and its ``crlfile`` the CA's CRL. A node enrolled
with ``enrol_node`` connects with its installed certificate and the ACL applies to its
node id; an expired, a revoked, a foreign-CA and a serverAuth-only certificate are
refused by the broker (OpenSSL's checks in Mosquitto, nothing mocked).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tensorguard.fleet.errors import MqttError
from tensorguard.fleet.mqtt import MqttConnection, MqttSettings
from tensorguard.fleet.topics import install_report_topic
from tensorguard.identity import CertificateAuthority, Profile
from tensorguard.identity.authority import utc_now
from tests.conftest import FLEET_ACL_FILE
from tests.identity.conftest import (
    dated_fleet_ca,
    enrol_and_install,
    issue_node_files,
    new_provider,
    service_csr,
    write_chain,
    write_key,
)
from tests.services.mosquitto import (
    MOSQUITTO_BIN_DIRS,
    BrokerAccess,
    BrokerTls,
    MosquittoBroker,
    running_mosquitto,
)
from tests.services.process import ServiceProcess, find_binary, free_port, port_is_open


@dataclass(frozen=True)
class Fleet:
    """The CA, the broker and the client credentials made for the module."""

    authority: CertificateAuthority
    broker: MosquittoBroker
    directory: Path


def _broker_tls(authority: CertificateAuthority, directory: Path) -> BrokerTls:
    """A broker certificate from ``authority`` and the TLS settings that use its CRL."""
    broker_key = ec.generate_private_key(ec.SECP256R1())
    broker_cert = authority.issue(service_csr("127.0.0.1", key=broker_key), Profile.SERVICE)
    broker_chain = write_chain(
        directory / "broker.crt", authority, broker_cert.public_bytes(serialization.Encoding.PEM)
    )
    return BrokerTls(
        ca_file=authority.store.bundle_file,
        cert_file=broker_chain,
        key_file=write_key(directory / "broker.key", broker_key),
        crl_file=authority.store.crl_file,
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """A CA created 20 days ago (so a certificate can already have expired), a broker
    certificate from it, a revoked node certificate and the broker with the CRL."""
    directory = tmp_path_factory.mktemp("mtls")
    authority = dated_fleet_ca(directory, created_days_ago=20)
    revoked_chain, _ = issue_node_files(authority, directory, "robot-revoked")
    revoked_serial = int(revoked_chain.stem.rsplit("-", 1)[1], 16)
    authority.revoke(revoked_serial)  # also re-signs the CRL with current dates
    tls = _broker_tls(authority, directory)
    access = BrokerAccess(users={}, acl_file=FLEET_ACL_FILE)
    with running_mosquitto(access=access, tls=tls) as broker:
        yield Fleet(authority, broker, directory)


def _settings(
    fleet: Fleet, cert_file: Path, key_file: Path, ca_file: Path | None = None
) -> MqttSettings:
    return MqttSettings(
        host=fleet.broker.host,
        port=fleet.broker.port,
        tls_ca_file=ca_file or fleet.authority.store.root_file,
        tls_cert_file=cert_file,
        tls_key_file=key_file,
        timeout_s=3,
    )


def _publish_own_report(settings: MqttSettings, node_id: str) -> None:
    with MqttConnection(settings, f"{node_id}-mtls") as connection:
        connection.publish(install_report_topic("plant-a", "stable", node_id), b"{}")


def test_an_enrolled_node_connects_with_its_certificate(fleet: Fleet) -> None:
    installed = enrol_and_install(fleet.authority, fleet.directory, "robot-7")
    settings = _settings(
        fleet, installed.tls_cert_file, installed.tls_key_file, installed.tls_ca_file
    )
    _publish_own_report(settings, "robot-7")
    with (
        MqttConnection(settings, "robot-7-acl") as connection,
        pytest.raises(MqttError, match="refused the message"),
    ):  # the certificate's CN is the username the per-node ACL checks
        connection.publish(install_report_topic("plant-a", "stable", "robot-8"), b"{}")


def test_an_expired_certificate_is_refused(fleet: Fleet) -> None:
    chain, key = issue_node_files(
        fleet.authority,
        fleet.directory,
        "robot-expired",
        lifetime=timedelta(days=1),
        now=utc_now() - timedelta(days=10),
    )
    with pytest.raises(MqttError):
        _publish_own_report(_settings(fleet, chain, key), "robot-expired")


def test_a_revoked_certificate_is_refused(fleet: Fleet) -> None:
    chain = next(fleet.directory.glob("robot-revoked-*.crt"))
    key = chain.with_suffix(".key")
    with pytest.raises(MqttError):
        _publish_own_report(_settings(fleet, chain, key), "robot-revoked")


def test_a_certificate_from_a_foreign_ca_is_refused(fleet: Fleet) -> None:
    foreign = CertificateAuthority.create(
        fleet.directory / "foreign-ca",
        new_provider(fleet.directory / "foreign-keys"),
        policy=fleet.authority.policy,
    )
    chain, key = issue_node_files(foreign, fleet.directory, "robot-foreign")
    with pytest.raises(MqttError):
        _publish_own_report(_settings(fleet, chain, key), "robot-foreign")


def test_a_server_certificate_is_not_a_client_identity(fleet: Fleet) -> None:
    """EKU separation at the broker: a serverAuth-only certificate cannot log in."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = fleet.authority.issue(service_csr("127.0.0.1", key=key), Profile.SERVICE)
    chain = write_chain(
        fleet.directory / "service-as-client.crt",
        fleet.authority,
        certificate.public_bytes(serialization.Encoding.PEM),
    )
    key_file = write_key(fleet.directory / "service-as-client.key", key)
    with pytest.raises(MqttError):
        _publish_own_report(_settings(fleet, chain, key_file), "127.0.0.1")


def test_a_revocation_takes_effect_when_the_broker_reloads(tmp_path: Path) -> None:
    """Mosquitto reads crlfile at start and on SIGHUP: revoked while it runs, a node is
    still let in until the reload, and refused after it."""
    authority = dated_fleet_ca(tmp_path)
    chain, key = issue_node_files(authority, tmp_path, "robot-9")
    access = BrokerAccess(users={}, acl_file=FLEET_ACL_FILE)
    with running_mosquitto(access=access, tls=_broker_tls(authority, tmp_path)) as broker:
        fleet = Fleet(authority, broker, tmp_path)
        _publish_own_report(_settings(fleet, chain, key), "robot-9")
        authority.revoke(int(chain.stem.rsplit("-", 1)[1], 16))
        _publish_own_report(_settings(fleet, chain, key), "robot-9")  # CRL not reloaded yet
        pid_file = broker.log_path.parent / "mosquitto.pid"  # written by the test broker
        os.kill(int(pid_file.read_text().strip()), signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            try:
                _publish_own_report(_settings(fleet, chain, key), "robot-9")
            except MqttError:
                break
            assert time.monotonic() < deadline, "the broker still admits a revoked certificate"
            time.sleep(0.2)


SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto-mtls.conf"


@contextmanager
def running_shipped_broker(tls: BrokerTls, directory: Path) -> Iterator[MosquittoBroker]:
    """Mosquitto started from deploy/mosquitto-mtls.conf, only its paths and port replaced."""
    port = free_port()
    replacements = {
        "listener 8883": f"listener {port} 127.0.0.1",
        "/etc/mosquitto/fleet-ca/ca-bundle.pem": str(tls.ca_file),
        "/etc/mosquitto/broker.crt": str(tls.cert_file),
        "/etc/mosquitto/broker.key": str(tls.key_file),
        "/etc/mosquitto/fleet-ca/crl.pem": str(tls.crl_file),
        "/etc/mosquitto/tensorguard.acl": str(FLEET_ACL_FILE),
    }
    text = SHIPPED_CONFIG.read_text(encoding="utf-8")
    for shipped, local in replacements.items():
        assert shipped in text, f"{SHIPPED_CONFIG} no longer has {shipped!r}"
        text = text.replace(shipped, local)
    text += f"persistence false\nlog_dest stdout\npid_file {directory / 'mosquitto.pid'}\n"
    if os.geteuid() == 0:
        text += "user root\n"
    config = directory / "mosquitto.conf"
    config.write_text(text, encoding="utf-8")
    binary = find_binary("mosquitto", MOSQUITTO_BIN_DIRS)
    log = directory / "mosquitto.log"
    broker = ServiceProcess(name="mosquitto", argv=[binary, "-c", str(config)], log_path=log)
    broker.start()
    try:
        broker.wait_until(lambda: port_is_open(port), timeout=20)
        yield MosquittoBroker(host="127.0.0.1", port=port, log_path=log)
    finally:
        broker.stop()


def test_the_shipped_broker_configuration(fleet: Fleet, tmp_path: Path) -> None:
    """deploy/mosquitto-mtls.conf as shipped: an enrolled-style node certificate gets in
    and the ACL applies; a revoked one (its CRL) and a missing certificate do not."""
    tls = _broker_tls(fleet.authority, tmp_path)
    with running_shipped_broker(tls, tmp_path) as broker:
        shipped = Fleet(fleet.authority, broker, tmp_path)
        chain, key = issue_node_files(fleet.authority, tmp_path, "robot-11")
        _publish_own_report(_settings(shipped, chain, key), "robot-11")
        revoked = next(fleet.directory.glob("robot-revoked-*.crt"))
        with pytest.raises(MqttError):
            _publish_own_report(
                _settings(shipped, revoked, revoked.with_suffix(".key")), "robot-revoked"
            )
        anonymous = MqttSettings(
            host=broker.host,
            port=broker.port,
            tls_ca_file=fleet.authority.store.root_file,
            timeout_s=3,
        )
        with pytest.raises(MqttError):
            _publish_own_report(anonymous, "robot-11")
