"""Fixtures for the identity tests: a file key provider, a CA, CSRs, real openssl and a
real ACME server (Pebble)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from tensorguard.identity import CertificateAuthority, IssuancePolicy, Profile, node_uri
from tensorguard.identity.authority import utc_now
from tensorguard.identity.enrol import InstalledCertificate, enrol_node, install_certificate
from tensorguard.keys import FileKeyProvider, MasterSecret, key_provider_from_env
from tests.services.pebble import PebbleServer, running_pebble

TRUST_DOMAIN = "fleet.test.internal"
SERVICE_NAMES = ("broker.fleet.test.internal", "*.api.fleet.test.internal")


def new_provider(key_dir: Path) -> FileKeyProvider:
    """A development file provider under a fresh random master."""
    master = MasterSecret.from_text(secrets.token_urlsafe(48), production=False)
    return FileKeyProvider(key_dir, master, production=False)


@pytest.fixture
def provider(tmp_path: Path) -> FileKeyProvider:
    """The CA operator's key provider."""
    return new_provider(tmp_path / "ca-keys")


@pytest.fixture
def policy() -> IssuancePolicy:
    """The test CA's policy: its own trust domain and a two-entry service allow-list."""
    return IssuancePolicy(
        trust_domain=TRUST_DOMAIN,
        service_dns_names=SERVICE_NAMES,
        service_ip_addresses=("127.0.0.1",),
    )


@pytest.fixture
def authority(
    tmp_path: Path, provider: FileKeyProvider, policy: IssuancePolicy
) -> CertificateAuthority:
    """A fresh CA in ``tmp_path/ca``."""
    return CertificateAuthority.create(tmp_path / "ca", provider, policy=policy)


@pytest.fixture
def ca_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A file key provider for the CA in the environment (as the CLI reads it); returns
    the CA directory to create, ``tmp_path/ca`` (keys in ``tmp_path/ca-keys``)."""
    monkeypatch.setenv("TG_KEY_PROVIDER", "file")
    monkeypatch.setenv("TG_KEY_DIR", str(tmp_path / "ca-keys"))
    monkeypatch.setenv("TG_KEY_MASTER", secrets.token_urlsafe(48))
    monkeypatch.delenv("TG_ENVIRONMENT", raising=False)
    return tmp_path / "ca"


def make_csr(
    key: CertificateIssuerPrivateKeyTypes,
    common_name: str,
    names: Sequence[x509.GeneralName],
    *,
    extensions: Sequence[x509.ExtensionType] = (),
) -> bytes:
    """A PEM CSR signed by ``key`` (Ed25519 needs no hash)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    for extension in extensions:
        builder = builder.add_extension(extension, critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def node_csr(node_id: str, key: CertificateIssuerPrivateKeyTypes | None = None) -> bytes:
    """A well-formed node CSR for ``node_id`` in the test trust domain."""
    key = key or ed25519.Ed25519PrivateKey.generate()
    return make_csr(key, node_id, [x509.UniformResourceIdentifier(node_uri(TRUST_DOMAIN, node_id))])


def service_csr(*names: str, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """A well-formed service CSR (ECDSA P-256) for DNS names and IP addresses."""
    general: list[x509.GeneralName] = []
    for name in names:
        try:
            general.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            general.append(x509.DNSName(name))
    return make_csr(key or ec.generate_private_key(ec.SECP256R1()), names[0], general)


def write_key(path: Path, key: ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> Path:
    """Write ``key`` as unencrypted PKCS#8 PEM, mode 0600, and return the path."""
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    return path


def write_chain(path: Path, authority: CertificateAuthority, leaf_pem: bytes) -> Path:
    """Write ``leaf_pem`` followed by ``authority``'s intermediate; return the path."""
    path.write_bytes(leaf_pem + authority.chain_pem())
    return path


def issue_node_files(
    authority: CertificateAuthority, directory: Path, node_id: str, **kwargs: object
) -> tuple[Path, Path]:
    """A node certificate chain and key file issued by ``authority`` (test-made key),
    named ``<node id>-<serial hex>.crt/.key`` in ``directory``."""
    key = ed25519.Ed25519PrivateKey.generate()
    certificate = authority.issue(node_csr(node_id, key), Profile.NODE, **kwargs)  # type: ignore[arg-type]
    stem = directory / f"{node_id}-{certificate.serial_number:x}"
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    chain = write_chain(stem.with_suffix(".crt"), authority, pem)
    return chain, write_key(stem.with_suffix(".key"), key)


def enrol_and_install(
    authority: CertificateAuthority, directory: Path, node_id: str
) -> InstalledCertificate:
    """The whole offline enrolment: keys and CSR made in ``directory/<node id>``, the
    certificate issued by ``authority`` and installed there (as ``agent enrol`` does)."""
    node_dir = directory / node_id
    request = enrol_node(node_dir, directory / "outbox", node_id=node_id, trust_domain=TRUST_DOMAIN)
    certificate = authority.issue(request.csr_file.read_bytes(), Profile.NODE)
    chain = write_chain(
        directory / f"{node_id}.crt",
        authority,
        certificate.public_bytes(serialization.Encoding.PEM),
    )
    return install_certificate(node_dir, chain, authority.store.root_file)


def dated_fleet_ca(directory: Path, *, created_days_ago: int = 0) -> CertificateAuthority:
    """A CA in ``directory/ca`` (keys in ``directory/ca-keys``) created
    ``created_days_ago`` days ago, that may issue service certificates for 127.0.0.1."""
    policy = IssuancePolicy(trust_domain=TRUST_DOMAIN, service_ip_addresses=("127.0.0.1",))
    return CertificateAuthority.create(
        directory / "ca",
        new_provider(directory / "ca-keys"),
        policy=policy,
        now=utc_now() - timedelta(days=created_days_ago),
    )


def write_pem(path: Path, certificate: x509.Certificate) -> Path:
    """Write ``certificate`` as PEM and return the path."""
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def openssl_verify(
    authority: CertificateAuthority, leaf: Path, *extra: str, untrusted: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``openssl verify`` on ``leaf`` with the CA's root and intermediate
    (or the intermediates in ``untrusted``, e.g. the CA bundle)."""
    binary = shutil.which("openssl")
    if binary is None:
        pytest.skip("the openssl binary is not installed")
    return subprocess.run(
        [
            binary,
            "verify",
            "-CAfile",
            str(authority.store.root_file),
            "-untrusted",
            str(untrusted or authority.store.intermediate_file),
            *extra,
            str(leaf),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture(scope="session")
def pebble_server() -> Iterator[PebbleServer]:
    """A real Pebble ACME server (and its DNS) on 127.0.0.1, started once per session."""
    with running_pebble() as server:
        yield server


@pytest.fixture
def fleet_ca(ca_env: Path, policy: IssuancePolicy) -> CertificateAuthority:
    """A CA made with the environment's provider (as the renewal asset opens it), with
    one node certificate of 30 days."""
    provider = key_provider_from_env(os.environ)
    authority = CertificateAuthority.create(ca_env, provider, policy=policy)
    authority.issue(node_csr("robot-7"), Profile.NODE)
    return authority
