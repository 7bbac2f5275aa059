"""Fixtures for the identity tests: a file key provider, a CA, CSRs, real openssl and a
real ACME server (Pebble)."""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID

from tensorguard.identity import CertificateAuthority, IssuancePolicy, Profile, node_uri
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
