"""The fleet API's node routes with node certificates from the fleet CA (mutual TLS).

A real ``tensorguard serve`` process with production settings listens with HTTPS under a
service certificate from the CA, asks for client certificates verified against the CA
bundle (``TG_TLS_CLIENT_CA_FILE``) and checks the CRL it is given (``TG_TLS_CRL_FILE``)
on every node request. Every request below is a real TLS handshake on loopback with
certificates the project's CA issued; nothing is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from tensorguard.fleet.agent import EdgeAgent
from tensorguard.fleet.agent_config import parse_agent_config, service_tls_context
from tensorguard.fleet.download import ExpectedPackage, download_package
from tensorguard.fleet.errors import AgentConfigError
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.fleet.rejections import InstallRefused
from tensorguard.identity import CertificateAuthority, Profile
from tensorguard.identity.authority import utc_now
from tensorguard.identity.deploy import SignalReload
from tensorguard.identity.tls_probe import certificate_fingerprint, wait_until_served
from tensorguard.service.client import FleetClientError, NodeClient, client_tls_context
from tensorguard.service.errors import (
    AuthenticationError,
    RevocationCheckError,
    ServiceConfigError,
)
from tensorguard.service.node_certificates import NodeCertificateVerifier, node_identity
from tensorguard.service.node_key import write_node_key
from tensorguard.service.request_signing import public_key_hex, sign_request
from tensorguard.service.settings import load_settings
from tensorguard.service.tls_settings import NodeAuth
from tensorguard.tgsp._keyfiles import load_recipient_private_key
from tensorguard.tgsp._trust import TrustStore
from tests.identity.conftest import (
    TRUST_DOMAIN,
    dated_fleet_ca,
    enrol_and_install,
    issue_node_files,
    new_provider,
    node_csr,
    service_csr,
    write_chain,
    write_key,
)
from tests.service.conftest import SHARED_ENV
from tests.service.fleet_server import FleetServer, running_fleet_server

Credentials = tuple[str, str]  # (certificate chain file, key file), as requests takes them


@dataclass(frozen=True)
class MtlsFleet:
    """The CA, the running service and where the service reads its CRL."""

    authority: CertificateAuthority
    server: FleetServer
    directory: Path
    served_crl: Path
    service_chain: Path
    service_key: Path

    def copy_crl(self) -> None:
        """Copy the CA's crl.pem to where the service reads it (as an operator does)."""
        staging = self.served_crl.with_suffix(".new")
        shutil.copyfile(self.authority.store.crl_file, staging)
        os.replace(staging, self.served_crl)


def _issue_node(
    authority: CertificateAuthority, directory: Path, node_id: str, **kwargs: object
) -> tuple[Credentials, int]:
    """A node certificate (chain file, key file) from ``authority`` and its serial."""
    chain, key = issue_node_files(authority, directory, node_id, **kwargs)
    return (str(chain), str(key)), int(chain.stem.rsplit("-", 1)[1], 16)


def _issue_service(authority: CertificateAuthority, chain: Path, key_file: Path) -> str:
    """A service certificate for 127.0.0.1 written (atomically) to the two paths; its
    SHA-256."""
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = authority.issue(service_csr("127.0.0.1", key=key), Profile.SERVICE)
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    write_key(key_file.with_suffix(".new"), key).replace(key_file)
    write_chain(chain.with_suffix(".new"), authority, pem).replace(chain)
    return certificate_fingerprint(certificate)


@pytest.fixture(scope="module")
def mtls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MtlsFleet]:
    """A CA created 20 days ago (so a certificate can already have expired) and
    ``tensorguard serve`` in production mode with HTTPS, client certificates and the CRL."""
    directory = tmp_path_factory.mktemp("api-mtls")
    authority = dated_fleet_ca(directory, created_days_ago=20)
    authority.publish_crl()  # current dates (the CA's first CRL is dated 20 days ago)
    chain, key = directory / "service.crt", directory / "service.key"
    _issue_service(authority, chain, key)
    served_crl = directory / "served-crl.pem"
    env = {
        **SHARED_ENV,
        "TG_REGISTRY_ROOT": str(directory / "registry"),
        "TG_ENVIRONMENT": "production",
        "TG_TLS_CERT_FILE": str(chain),
        "TG_TLS_KEY_FILE": str(key),
        "TG_TLS_CLIENT_CA_FILE": str(authority.store.bundle_file),
        "TG_TLS_CRL_FILE": str(served_crl),
    }
    fleet = MtlsFleet(authority, None, directory, served_crl, chain, key)  # type: ignore[arg-type]
    fleet.copy_crl()
    with running_fleet_server(
        directory,
        env,
        tls_ca_file=authority.store.root_file,
        extra_args=["--pid-file", str(directory / "serve.pid")],
    ) as server:
        yield MtlsFleet(authority, server, directory, served_crl, chain, key)
    assert not (directory / "serve.pid").exists()  # removed when SIGTERM stopped serve


def _enrol_in_api(fleet: MtlsFleet, node_id: str) -> ed25519.Ed25519PrivateKey:
    """Enrol ``node_id``'s request-signing key with the service (operator, no client cert)."""
    key = ed25519.Ed25519PrivateKey.generate()
    body = {
        "node_id": node_id,
        "fleet": "plant-a",
        "channel": "stable",
        "cohort": "canary",
        "public_key": public_key_hex(key.public_key()),
    }
    response = fleet.server.post_json("/v1/nodes", body, token=fleet.server.token())
    assert response.status_code == 201, response.text
    return key


def _heartbeat(
    fleet: MtlsFleet,
    node_id: str,
    key: ed25519.Ed25519PrivateKey,
    cert: Credentials | None,
    *,
    signer: str | None = None,
) -> requests.Response:
    """A heartbeat for ``node_id`` signed as ``signer`` (default the node), sent over TLS
    with ``cert`` as the client certificate (or none)."""
    path = f"/v1/nodes/{node_id}/heartbeat"
    body = json.dumps({"installed_version": None}).encode()
    headers = {"Content-Type": "application/json"}
    headers.update(sign_request(key, signer or node_id, "POST", path, body))
    return requests.post(
        fleet.server.url + path,
        data=body,
        headers=headers,
        cert=cert,
        verify=str(fleet.authority.store.root_file),
        timeout=10,
    )


def _tls_answer(fleet: MtlsFleet, cert: Credentials) -> bytes:
    """The first bytes the service answers to ``GET /healthz`` on a TLS connection made
    with ``cert``; empty when it closes the connection (a refused certificate: under
    TLS 1.3 the client finishes its side of the handshake before the server decides)."""
    context = ssl.create_default_context(cafile=fleet.authority.store.root_file)
    context.load_cert_chain(*cert)
    port = int(fleet.server.url.rsplit(":", 1)[1])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            tls.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return tls.recv(1024)
    except (ssl.SSLError, ConnectionResetError):
        return b""


def _last_seen(fleet: MtlsFleet, node_id: str) -> object:
    response = fleet.server.get(f"/v1/nodes/{node_id}", token=fleet.server.token())
    assert response.status_code == 200, response.text
    return response.json()["last_seen_at"]


def test_an_enrolled_node_reports_with_its_certificate(mtls: MtlsFleet) -> None:
    """Enrolment on the node, issuance, installation, then the agent's own client (built
    from agent.yaml's service_tls_* files) posts a heartbeat and telemetry."""
    installed = enrol_and_install(mtls.authority, mtls.directory, "robot-7")
    node_dir = installed.tls_cert_file.parent
    signing_key = _enrol_in_api(mtls, "robot-7")
    write_node_key(node_dir / "request.key", signing_key)
    config = parse_agent_config(
        {
            "node_id": "robot-7",
            "fleet": "plant-a",
            "channels": ["stable"],
            "state_dir": str(node_dir / "state"),
            "trust_store": str(node_dir / "trust-store.json"),
            "recipient_key_file": str(node_dir / "robot-7.xwing.key"),
            "service_url": mtls.server.url,
            "node_key_file": str(node_dir / "request.key"),
            "service_tls_ca_file": str(installed.tls_ca_file),
            "service_tls_cert_file": str(installed.tls_cert_file),
            "service_tls_key_file": str(installed.tls_key_file),
        }
    )
    agent = EdgeAgent(
        config,
        trust_store=TrustStore(),
        recipient_key=load_recipient_private_key(node_dir / "robot-7.xwing.key"),
        node_key=signing_key,
    )
    assert agent.service_reporter is not None
    assert agent.service_reporter.heartbeat(3, force=True)  # True: the service took it
    assert _last_seen(mtls, "robot-7") is not None
    assert config.service_url is not None
    client = NodeClient(
        config.service_url, "robot-7", signing_key, tls_context=service_tls_context(config)
    )
    assert client.post_telemetry(installed_version=3, install_outcome="installed") is True


def test_a_package_downloads_over_mutual_tls(mtls: MtlsFleet) -> None:
    """The agent's download path (tensorguard.fleet.download) presents the node's
    certificate; the same signed download without it is refused."""
    key = _enrol_in_api(mtls, "robot-dl")
    (cert_file, key_file), _ = _issue_node(mtls.authority, mtls.directory, "robot-dl")
    package = mtls.directory / "package.bin"
    package.write_bytes(os.urandom(300_000))
    record = LocalRegistry(mtls.directory / "registry").publish(package, "mtls", 1)
    location = f"{mtls.server.url}/v1/packages/mtls/1"
    expected = ExpectedPackage(size=record.size, digest=record.digest)
    root = mtls.authority.store.root_file
    with_cert = NodeClient(
        mtls.server.url,
        "robot-dl",
        key,
        tls_context=client_tls_context(root, Path(cert_file), Path(key_file)),
    )
    target = mtls.directory / "downloaded.tgsp"
    download_package(location, target, target.with_suffix(".part"), expected, with_cert)
    assert target.read_bytes() == package.read_bytes()
    without = NodeClient(
        mtls.server.url, "robot-dl", key, attempts=1, tls_context=client_tls_context(root)
    )
    other = mtls.directory / "refused.tgsp"
    with pytest.raises(InstallRefused, match="401"):
        download_package(location, other, other.with_suffix(".part"), expected, without)
    assert not other.exists()


def test_node_routes_refuse_a_request_without_a_certificate(mtls: MtlsFleet) -> None:
    """Correctly signed, but no client certificate: 401 under TG_NODE_AUTH=mtls (the
    default with a client CA); health and operator routes need none."""
    key = _enrol_in_api(mtls, "robot-nocert")
    response = _heartbeat(mtls, "robot-nocert", key, cert=None)
    assert response.status_code == 401, response.text
    assert "client certificate" in response.json()["detail"]
    assert _last_seen(mtls, "robot-nocert") is None
    assert mtls.server.get("/healthz").status_code == 200


def test_an_expired_certificate_is_refused(mtls: MtlsFleet) -> None:
    key = _enrol_in_api(mtls, "robot-expired")
    cert, _ = _issue_node(
        mtls.authority,
        mtls.directory,
        "robot-expired",
        lifetime=timedelta(days=1),
        now=utc_now() - timedelta(days=10),
    )
    with pytest.raises(requests.exceptions.ConnectionError):
        _heartbeat(mtls, "robot-expired", key, cert)
    assert _tls_answer(mtls, cert) == b""
    assert _last_seen(mtls, "robot-expired") is None


def test_a_certificate_from_a_foreign_ca_is_refused(mtls: MtlsFleet) -> None:
    foreign = CertificateAuthority.create(
        mtls.directory / "foreign-ca",
        new_provider(mtls.directory / "foreign-keys"),
        policy=mtls.authority.policy,
    )
    key = _enrol_in_api(mtls, "robot-foreign")
    cert, _ = _issue_node(foreign, mtls.directory, "robot-foreign")
    with pytest.raises(requests.exceptions.ConnectionError):
        _heartbeat(mtls, "robot-foreign", key, cert)
    assert _tls_answer(mtls, cert) == b""
    assert _last_seen(mtls, "robot-foreign") is None


def test_a_service_certificate_is_not_a_node_identity(mtls: MtlsFleet) -> None:
    """EKU separation: a serverAuth-only certificate from the same CA is no client."""
    key = _enrol_in_api(mtls, "robot-svc")
    service_key = ec.generate_private_key(ec.SECP256R1())
    leaf = mtls.authority.issue(service_csr("127.0.0.1", key=service_key), Profile.SERVICE)
    chain = write_chain(
        mtls.directory / "service-as-client.crt",
        mtls.authority,
        leaf.public_bytes(serialization.Encoding.PEM),
    )
    cert = (str(chain), str(write_key(mtls.directory / "service-as-client.key", service_key)))
    with pytest.raises(requests.exceptions.ConnectionError):
        _heartbeat(mtls, "robot-svc", key, cert)
    assert _tls_answer(mtls, cert) == b""


def test_a_revocation_takes_effect_when_the_crl_is_copied(mtls: MtlsFleet) -> None:
    """Revoked while the service runs: admitted until the new crl.pem is copied to
    TG_TLS_CRL_FILE, refused (401) on the next request after it, without a restart."""
    key = _enrol_in_api(mtls, "robot-revoked")
    cert, serial = _issue_node(mtls.authority, mtls.directory, "robot-revoked")
    assert _heartbeat(mtls, "robot-revoked", key, cert).status_code == 200
    mtls.authority.revoke(serial)
    assert _heartbeat(mtls, "robot-revoked", key, cert).status_code == 200  # not copied yet
    mtls.copy_crl()
    response = _heartbeat(mtls, "robot-revoked", key, cert)
    assert response.status_code == 401, response.text
    assert "revoked" in response.json()["detail"]


def test_a_node_certificate_cannot_act_for_another_node(mtls: MtlsFleet) -> None:
    mine, _ = _issue_node(mtls.authority, mtls.directory, "robot-a")
    key_a = _enrol_in_api(mtls, "robot-a")
    key_b = _enrol_in_api(mtls, "robot-b")
    # robot-b's own signature on robot-b's route, but over robot-a's certificate
    response = _heartbeat(mtls, "robot-b", key_b, mine)
    assert response.status_code == 403, response.text
    assert "robot-a" in response.json()["detail"]
    # robot-a's certificate and signature on robot-b's route
    assert _heartbeat(mtls, "robot-b", key_a, mine, signer="robot-a").status_code == 403
    assert _last_seen(mtls, "robot-b") is None
    assert _heartbeat(mtls, "robot-a", key_a, mine).status_code == 200
    assert _tls_answer(mtls, mine).startswith(b"HTTP/1.1 200")  # the probe's control


def test_a_stale_crl_refuses_every_node_request(mtls: MtlsFleet) -> None:
    """A CRL past its nextUpdate cannot say whether a certificate is revoked: 503 (fail
    closed) until a current one is copied in."""
    key = _enrol_in_api(mtls, "robot-stale")
    cert, _ = _issue_node(mtls.authority, mtls.directory, "robot-stale")
    mtls.authority.publish_crl(now=utc_now() - timedelta(days=8))  # nextUpdate: a day ago
    mtls.copy_crl()
    try:
        response = _heartbeat(mtls, "robot-stale", key, cert)
        assert response.status_code == 503, response.text
        assert "revocation" in response.json()["detail"]
    finally:
        mtls.authority.publish_crl()
        mtls.copy_crl()
    assert _heartbeat(mtls, "robot-stale", key, cert).status_code == 200


def test_sighup_serves_a_renewed_service_certificate(mtls: MtlsFleet) -> None:
    """The renewal deploy hook's reload (SignalReload on serve's --pid-file): new files,
    SIGHUP, and new connections get the new certificate (the process keeps running)."""
    renewed = _issue_service(mtls.authority, mtls.service_chain, mtls.service_key)
    process = mtls.server.process.process
    pid_file = mtls.directory / "serve.pid"
    assert process is not None
    assert int(pid_file.read_text()) == process.pid
    SignalReload(pid_file)()
    port = int(mtls.server.url.rsplit(":", 1)[1])
    wait_until_served("127.0.0.1", port, "127.0.0.1", renewed, timeout_s=10)
    assert mtls.server.get("/healthz").status_code == 200


# Settings and configuration (no server).

TLS_FILES = {
    "TG_TLS_CERT_FILE": "/etc/tensorguard/api.crt",
    "TG_TLS_KEY_FILE": "/etc/tensorguard/api.key",
    "TG_TLS_CLIENT_CA_FILE": "/etc/tensorguard/fleet-ca/ca-bundle.pem",
    "TG_TLS_CRL_FILE": "/etc/tensorguard/fleet-ca/crl.pem",
}
PRODUCTION = {
    "TG_ENVIRONMENT": "production",
    "TG_SECRET_KEY": "s" * 40,
    "DATABASE_URL": "postgresql://fleet@db/tensorguard",
}


def test_production_refuses_node_routes_without_mutual_tls() -> None:
    with pytest.raises(ServiceConfigError) as info:
        load_settings(PRODUCTION)
    message = str(info.value)
    assert "without a certificate from the fleet CA" in message
    assert "TG_TLS_CRL_FILE" in message  # the remedy names every file
    assert "TG_NODE_AUTH=signature" in message  # and the explicit way out
    assert load_settings({**PRODUCTION, **TLS_FILES}).tls.node_auth is NodeAuth.MTLS
    explicit = load_settings({**PRODUCTION, "TG_NODE_AUTH": "signature"})
    assert explicit.tls.node_auth is NodeAuth.SIGNATURE
    assert not explicit.tls.enabled


def test_development_serves_plain_http_with_signed_node_requests() -> None:
    settings = load_settings({"TG_SECRET_KEY": "s" * 40})
    assert settings.tls.node_auth is NodeAuth.SIGNATURE
    assert not settings.tls.enabled


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"TG_TLS_KEY_FILE": ""}, "set both TG_TLS_CERT_FILE and TG_TLS_KEY_FILE"),
        ({"TG_TLS_CRL_FILE": ""}, "revoked node certificates would be accepted"),
        ({"TG_TLS_CERT_FILE": "", "TG_TLS_KEY_FILE": ""}, "TG_TLS_CLIENT_CA_FILE needs TLS"),
        ({"TG_TLS_CLIENT_CA_FILE": ""}, "TG_TLS_CRL_FILE is set without TG_TLS_CLIENT_CA_FILE"),
        ({"TG_NODE_AUTH": "certificate"}, "is not one of mtls, signature"),
    ],
    ids=["cert-without-key", "ca-without-crl", "ca-without-tls", "crl-without-ca", "bad-mode"],
)
def test_incomplete_tls_settings_are_refused(change: dict[str, str], expected: str) -> None:
    with pytest.raises(ServiceConfigError, match=expected):
        load_settings({"TG_SECRET_KEY": "s" * 40, **TLS_FILES, **change})


def test_mtls_without_client_certificates_is_refused() -> None:
    with pytest.raises(ServiceConfigError, match="TG_NODE_AUTH=mtls needs client certificates"):
        load_settings({"TG_SECRET_KEY": "s" * 40, "TG_NODE_AUTH": "mtls"})


AGENT = {
    "node_id": "robot-7",
    "fleet": "plant-a",
    "channels": ["stable"],
    "state_dir": "/var/lib/tensorguard-agent",
    "trust_store": "/etc/tensorguard/trust-store.json",
    "recipient_key_file": "/etc/tensorguard/robot-7.xwing.key",
    "node_key_file": "/etc/tensorguard/robot-7.ed25519.pem",
}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"service_url": "http://fleet:8080", "service_tls_ca_file": "/ca.pem"},
            "service_url is not https://",
        ),
        (
            {"service_url": "https://fleet:8443", "service_tls_cert_file": "/tls.crt"},
            "set both service_tls_cert_file and service_tls_key_file",
        ),
    ],
    ids=["tls-over-http", "cert-without-key"],
)
def test_agent_tls_settings_are_checked(fields: dict[str, str], expected: str) -> None:
    with pytest.raises(AgentConfigError, match=expected):
        parse_agent_config({**AGENT, **fields})


def test_a_node_client_refuses_tls_settings_for_http() -> None:
    with pytest.raises(FleetClientError, match="not https"):
        NodeClient(
            "http://127.0.0.1:8080",
            "robot-7",
            ed25519.Ed25519PrivateKey.generate(),
            tls_context=ssl.create_default_context(),
        )


def _self_signed(common_name: str, uris: list[str]) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(utc_now())
        .not_valid_after(utc_now() + timedelta(days=1))
    )
    if uris:
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize(
    ("common_name", "uris"),
    [
        ("robot-8", [f"spiffe://{TRUST_DOMAIN}/node/robot-7"]),  # CN names another node
        ("robot-7", [f"spiffe://{TRUST_DOMAIN}/service/robot-7"]),  # not the node path
        ("robot-7", [f"https://{TRUST_DOMAIN}/node/robot-7"]),  # not a SPIFFE id
        ("robot-7", []),  # no URI at all
        (
            "robot-7",
            [f"spiffe://{TRUST_DOMAIN}/node/robot-7", f"spiffe://{TRUST_DOMAIN}/node/robot-8"],
        ),
        ("Robot 7", [f"spiffe://{TRUST_DOMAIN}/node/Robot 7"]),  # not a node id
    ],
    ids=["cn-mismatch", "service-path", "https-uri", "no-uri", "two-nodes", "bad-id"],
)
def test_only_a_node_profile_certificate_names_a_node(common_name: str, uris: list[str]) -> None:
    with pytest.raises(AuthenticationError, match="not a fleet node certificate"):
        node_identity(_self_signed(common_name, uris))


def test_a_node_profile_certificate_names_its_node() -> None:
    uri = f"spiffe://{TRUST_DOMAIN}/node/robot-7"
    assert node_identity(_self_signed("robot-7", [uri])) == "robot-7"


# The per-request verifier on its own (no server): cache bounds and CRL signatures.


def _node_der(
    authority: CertificateAuthority, node_id: str, lifetime: timedelta | None = None
) -> tuple[bytes, int]:
    certificate = authority.issue(node_csr(node_id), Profile.NODE, lifetime=lifetime)
    return certificate.public_bytes(serialization.Encoding.DER), certificate.serial_number


def _other_ca(authority: CertificateAuthority, tmp_path: Path) -> CertificateAuthority:
    """A second CA with ``authority``'s policy (and so the same names)."""
    return CertificateAuthority.create(
        tmp_path / "other-ca", new_provider(tmp_path / "other-keys"), policy=authority.policy
    )


def test_a_remembered_chain_still_expires_and_is_still_revocable(
    authority: CertificateAuthority,
) -> None:
    verifier = NodeCertificateVerifier(authority.store.bundle_file, authority.store.crl_file)
    der, serial = _node_der(authority, "robot-7", lifetime=timedelta(hours=1))
    assert verifier.node_id(der) == "robot-7"
    assert verifier.node_id(der) == "robot-7"  # from the cache
    with pytest.raises(AuthenticationError, match="does not verify"):  # the CRL is still current
        verifier.node_id(der, now=utc_now() + timedelta(hours=2))  # past not-after
    authority.revoke(serial)  # rewrites crl.pem, which the verifier reads again
    with pytest.raises(AuthenticationError, match="revoked"):
        verifier.node_id(der)


def test_a_crl_not_signed_by_the_issuer_decides_nothing(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    """Another CA with the same names signs a CRL: it does not count as the issuer's."""
    other = _other_ca(authority, tmp_path)
    assert other.intermediate.subject == authority.intermediate.subject
    verifier = NodeCertificateVerifier(authority.store.bundle_file, other.store.crl_file)
    der, _ = _node_der(authority, "robot-7")
    with pytest.raises(RevocationCheckError, match="no CRL signed by"):
        verifier.node_id(der)


def test_a_foreign_certificate_does_not_verify(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    other = _other_ca(authority, tmp_path)
    verifier = NodeCertificateVerifier(authority.store.bundle_file, authority.store.crl_file)
    with pytest.raises(AuthenticationError, match="does not verify"):
        verifier.node_id(_node_der(other, "robot-7")[0])
