"""Renewal as a state machine, against a real Pebble and a real Mosquitto TLS listener:
issue → renew → deploy (atomic install + SIGHUP) → verify (served fingerprint), and the
rollbacks: a failing deploy hook and a service that keeps the old certificate."""

from __future__ import annotations

import base64
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tensorguard.identity import CertificateAuthority
from tensorguard.identity.acme_issuer import AcmeIssuer, AcmeSettings
from tensorguard.identity.audit import AuditError
from tensorguard.identity.deploy import CertificateFiles, CommandReload, SignalReload
from tensorguard.identity.renewal import (
    RenewalJob,
    RenewalState,
    RetryPolicy,
    ServiceEndpoint,
    audit_recorder,
    new_key_and_csr,
)
from tensorguard.identity.tls_probe import certificate_fingerprint, served_fingerprint
from tests.services.mosquitto import MOSQUITTO_BIN_DIRS
from tests.services.pebble import PebbleServer
from tests.services.process import ServiceProcess, find_binary, free_port, port_is_open

NAME = "broker.fleet.test"
S = RenewalState
HAPPY_PATH = [S.PENDING, S.ISSUING, S.CHALLENGE, S.ISSUED, S.DEPLOYING, S.VERIFYING, S.SUCCEEDED]


def acme_issuer(
    pebble: PebbleServer, tmp_path: Path, *, http01_port: int | None = None
) -> AcmeIssuer:
    """An ACME client of the test Pebble (its API CA trusted here only)."""
    return AcmeIssuer(
        AcmeSettings(
            directory_url=pebble.directory_url,
            account_key_file=tmp_path / "acme-account.key",
            ca_bundle=pebble.api_ca_file,
            http01_port=http01_port or pebble.http01_port,
            timeout_s=30.0,
        )
    )


@contextmanager
def mosquitto_tls(files: CertificateFiles, work_dir: Path) -> Iterator[tuple[int, Path]]:
    """Mosquitto with one TLS listener serving ``files``; yields (port, pid file)."""
    port, pid_file = free_port(), work_dir / "mosquitto.pid"
    lines = [
        f"listener {port} 127.0.0.1",
        f"certfile {files.cert_file}",
        f"keyfile {files.key_file}",
        "allow_anonymous true",
        "persistence false",
        "log_dest stdout",
        f"pid_file {pid_file}",
    ] + (["user root"] if os.geteuid() == 0 else [])
    config = work_dir / "mosquitto.conf"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    broker = ServiceProcess(
        name="mosquitto",
        argv=[find_binary("mosquitto", MOSQUITTO_BIN_DIRS), "-c", str(config)],
        log_path=work_dir / "mosquitto.log",
    )
    broker.start()
    try:
        broker.wait_until(lambda: port_is_open(port) and pid_file.exists(), timeout=20)
        yield port, pid_file
    finally:
        broker.stop()


def renewal_entries(authority: CertificateAuthority, job_id: str) -> list[dict[str, object]]:
    """The verified audit entries of one renewal job."""
    return [
        entry
        for entry in authority.audit.entries()
        if entry["event"] == "renewal-transition" and entry["job_id"] == job_id
    ]


def assert_key_not_recorded(
    key_pem: bytes | None, authority: CertificateAuthority, *texts: str
) -> None:
    """The service's private key (PEM body, DER, raw scalar) is in no audit entry or text."""
    assert key_pem is not None
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    haystack = authority.store.audit_file.read_bytes() + "".join(texts).encode()
    for secret in (scalar, der):
        for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
            assert form not in haystack
    for pem_line in key_pem.splitlines()[1:-1]:  # the PEM body, line by line
        assert pem_line not in haystack


def test_issue_renew_deploy_verify_and_roll_back(
    pebble_server: PebbleServer, authority: CertificateAuthority, tmp_path: Path
) -> None:
    issuer = acme_issuer(pebble_server, tmp_path)
    files = CertificateFiles(tmp_path / "broker.crt", tmp_path / "broker.key")
    key_pem, csr_pem = new_key_and_csr((NAME,))
    files.install(issuer.issue(csr_pem), key_pem)  # the first certificate, before the broker
    first = certificate_fingerprint(
        x509.load_pem_x509_certificates(files.cert_file.read_bytes())[0]
    )

    with mosquitto_tls(files, tmp_path) as (port, pid_file):
        endpoint = ServiceEndpoint("mqtt-broker", (NAME,), files, "127.0.0.1", port)
        assert served_fingerprint("127.0.0.1", port, NAME) == first

        # Renew: issue → challenge → deploy (atomic files + SIGHUP) → verify.
        job = RenewalJob(endpoint, issuer, SignalReload(pid_file), audit_recorder(authority))
        renewed = job.run()
        assert renewed.state is S.SUCCEEDED, renewed.reason
        assert renewed.history == HAPPY_PATH
        assert renewed.previous_fingerprint == first
        assert renewed.fingerprint != first
        assert served_fingerprint("127.0.0.1", port, NAME) == renewed.fingerprint
        entries = renewal_entries(authority, renewed.job_id)
        assert [entry["details"]["to"] for entry in entries] == [s.value for s in HAPPY_PATH]  # type: ignore[index]
        assert {entry["endpoint_id"] for entry in entries} == {"mqtt-broker"}
        installed = files.snapshot()
        assert_key_not_recorded(installed.key_pem, authority, repr(renewed))

        # A failing deploy hook (the reload refuses): ROLLED_BACK, old certificate served.
        failing = CommandReload([sys.executable, "-c", "import sys; sys.exit('reload refused')"])
        broken = RenewalJob(endpoint, issuer, failing, audit_recorder(authority)).run()
        assert broken.state is S.ROLLED_BACK
        assert broken.reason is not None
        assert "reload refused" in broken.reason
        assert served_fingerprint("127.0.0.1", port, NAME) == renewed.fingerprint
        assert files.snapshot() == installed
        last = renewal_entries(authority, broken.job_id)[-1]
        assert last["details"]["to"] == "ROLLED_BACK"  # type: ignore[index]
        assert "reload refused" in last["details"]["reason"]  # type: ignore[index]
        assert last["details"]["restored_sha256"] == renewed.fingerprint  # type: ignore[index]

        # A service that never picks the new files up: verification catches it.
        no_reload = CommandReload(["true"])
        quick = ServiceEndpoint(
            "mqtt-broker", (NAME,), files, "127.0.0.1", port, verify_timeout_s=1.5
        )
        stale = RenewalJob(quick, issuer, no_reload, audit_recorder(authority)).run()
        assert stale.state is S.ROLLED_BACK
        assert stale.reason is not None
        assert "verification failed" in stale.reason
        assert served_fingerprint("127.0.0.1", port, NAME) == renewed.fingerprint
        assert files.snapshot() == installed
    authority.audit.verify()


def test_retries_wait_the_backoff_then_fail(
    pebble_server: PebbleServer, authority: CertificateAuthority, tmp_path: Path
) -> None:
    issuer = acme_issuer(pebble_server, tmp_path, http01_port=free_port())  # Pebble cannot reach it
    files = CertificateFiles(tmp_path / "svc.crt", tmp_path / "svc.key")
    waited: list[float] = []

    def sleep(seconds: float) -> None:
        started = time.monotonic()
        time.sleep(seconds)
        waited.append(round(time.monotonic() - started, 1))

    endpoint = ServiceEndpoint("svc", (NAME,), files, "127.0.0.1", free_port())
    retry = RetryPolicy(max_attempts=3, initial_delay_s=0.3, multiplier=2.0)
    outcome = RenewalJob(
        endpoint,
        issuer,
        CommandReload(["true"]),
        audit_recorder(authority),
        retry=retry,
        sleep=sleep,
    ).run()
    assert outcome.state is S.FAILED
    assert outcome.attempts == 3
    assert waited == [0.3, 0.6]
    assert outcome.reason is not None
    assert "validation failed" in outcome.reason
    assert not files.cert_file.exists()
    assert not files.key_file.exists()
    details = [entry["details"] for entry in renewal_entries(authority, outcome.job_id)]
    assert [d["to"] for d in details] == [  # type: ignore[index]
        "PENDING",
        *(["ISSUING", "CHALLENGE", "PENDING"] * 2),
        "ISSUING",
        "CHALLENGE",
        "FAILED",
    ]
    assert [d["retry_in_ms"] for d in details if "retry_in_ms" in d] == [300, 600]  # type: ignore[operator,index]


def test_retry_policy_backoff_is_capped_but_honours_the_server() -> None:
    policy = RetryPolicy(max_attempts=5, initial_delay_s=10, multiplier=3, max_delay_s=60)
    assert [policy.delay(attempt) for attempt in (1, 2, 3, 4)] == [10, 30, 60, 60]
    assert policy.delay(1, retry_after=120) == 120
    assert policy.delay(2, retry_after=5) == 30
    with pytest.raises(Exception, match="max_attempts"):
        RetryPolicy(max_attempts=0)


def test_a_transition_that_cannot_be_recorded_stops_the_job(
    pebble_server: PebbleServer, authority: CertificateAuthority, tmp_path: Path
) -> None:
    lines = authority.store.audit_file.read_bytes().splitlines(keepends=True)
    authority.store.audit_file.write_bytes(lines[0].replace(b"ca-created", b"ca-cr3ated"))
    files = CertificateFiles(tmp_path / "svc.crt", tmp_path / "svc.key")
    endpoint = ServiceEndpoint("svc", (NAME,), files, "127.0.0.1", free_port())
    issuer = acme_issuer(pebble_server, tmp_path)
    job = RenewalJob(endpoint, issuer, CommandReload(["true"]), audit_recorder(authority))
    with pytest.raises(AuditError):
        job.run()
    assert job.outcome.history == []
    assert not files.cert_file.exists()
