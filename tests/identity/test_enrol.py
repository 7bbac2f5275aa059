"""Enrolment on the node: keys made in the node's directory, only public files leave it."""

from __future__ import annotations

import base64
import json
import stat
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.crypto._xwing import XWingPrivateKey
from tensorguard.identity import (
    CertificateAuthority,
    EnrolmentError,
    IssuancePolicyError,
    Profile,
    node_uri,
)
from tensorguard.identity.csr import xwing_fingerprint
from tensorguard.identity.enrol import enrol_node, install_certificate
from tensorguard.tgsp._keyfiles import (
    load_recipient_private_key,
    load_recipient_public_key,
    write_key_file,
)
from tests.identity.conftest import (
    TRUST_DOMAIN,
    make_csr,
    new_provider,
    node_csr,
    openssl_verify,
)


def _secret_forms(secret: bytes) -> list[bytes]:
    """The raw, hex and base64 spellings of ``secret`` a leak could take."""
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def _node_secrets(node_dir: Path, node_id: str) -> list[bytes]:
    """Every spelling of the node's TLS and X-Wing private keys."""
    tls_pem = (node_dir / "tls.key").read_bytes()
    tls_key = serialization.load_pem_private_key(tls_pem, password=None)
    assert isinstance(tls_key, ed25519.Ed25519PrivateKey)
    raw = tls_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    der = tls_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    seed = load_recipient_private_key(node_dir / f"{node_id}.xwing.key").private_bytes()
    forms = [tls_pem, *_secret_forms(raw), *_secret_forms(der), *_secret_forms(seed)]
    assert all(len(form) >= 32 for form in forms)
    return forms


def test_private_keys_never_leave_the_node_directory(
    tmp_path: Path, ca_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole offline enrolment on the command line; then every file outside the
    node's directory (CA keys, CA directory, outbox, transfer) and everything printed is
    searched for the node's private keys."""
    node_dir, outbox, ca_dir = tmp_path / "node", tmp_path / "outbox", ca_env
    chain = tmp_path / "transfer" / "robot-7.crt"
    chain.parent.mkdir()
    domain = ["--trust-domain", TRUST_DOMAIN]
    assert main(["identity", "init", "--ca-dir", str(ca_dir), *domain]) == ExitCode.OK
    enrol = ["agent", "enrol", "--node-dir", str(node_dir), "--node-id", "robot-7"]
    assert main([*enrol, "--out", str(outbox), *domain]) == ExitCode.OK
    assert sorted(p.name for p in outbox.iterdir()) == ["robot-7.csr.pem", "robot-7.xwing.pub"]
    csr = outbox / "robot-7.csr.pem"
    issue = ["identity", "issue", "--ca-dir", str(ca_dir), "--csr", str(csr), "--out", str(chain)]
    assert main([*issue, "--xwing-pub", str(outbox / "robot-7.xwing.pub")]) == ExitCode.OK
    earlier = capsys.readouterr()
    install = ["agent", "enrol", "--node-dir", str(node_dir), "--install-cert", str(chain)]
    assert main([*install, "--ca-file", str(ca_dir / "root.pem")]) == ExitCode.OK
    last = capsys.readouterr()
    installed = json.loads(last.out)
    printed = earlier.out + earlier.err + last.out + last.err
    assert installed["mqtt"]["tls_key_file"] == str(node_dir / "tls.key")

    assert stat.S_IMODE(node_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((node_dir / "tls.key").stat().st_mode) == 0o600
    forms = _node_secrets(node_dir, "robot-7")
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and node_dir not in p.parents]
    assert len(outside) > 10  # CA keys, CA directory, outbox, transfer
    for path in outside:
        data = path.read_bytes()
        leaked = [form[:8].hex() for form in forms if form in data]
        assert not leaked, f"node private key material in {path}"
    assert not any(form in printed.encode() for form in forms)

    leaf = node_dir / "tls.crt"
    assert (
        openssl_verify(
            CertificateAuthority(ca_dir, new_provider(tmp_path / "x")),
            leaf,
            "-purpose",
            "sslclient",
        ).returncode
        == 0
    )
    published = load_recipient_public_key(outbox / "robot-7.xwing.pub")
    own = load_recipient_private_key(node_dir / "robot-7.xwing.key").public_key()
    assert published.public_bytes() == own.public_bytes()


def test_the_agents_existing_xwing_key_is_kept(tmp_path: Path) -> None:
    existing = tmp_path / "agent" / "robot-7.xwing.key"
    existing.parent.mkdir()
    key = XWingPrivateKey.generate()
    write_key_file(existing, key)
    request = enrol_node(
        tmp_path / "node", tmp_path / "outbox", node_id="robot-7", xwing_key_file=existing
    )
    assert request.xwing_key_generated is False
    assert request.tls_key_generated is True
    published = load_recipient_public_key(request.xwing_public_key_file)
    assert published.public_bytes() == key.public_key().public_bytes()
    assert not (tmp_path / "node" / "robot-7.xwing.key").exists()


def test_enrolling_again_reuses_the_keys(tmp_path: Path) -> None:
    first = enrol_node(tmp_path / "node", tmp_path / "outbox", node_id="robot-7")
    key_before = (tmp_path / "node" / "tls.key").read_bytes()
    second = enrol_node(tmp_path / "node", tmp_path / "outbox", node_id="robot-7")
    assert (first.tls_key_generated, second.tls_key_generated) == (True, False)
    assert second.xwing_key_generated is False
    assert (tmp_path / "node" / "tls.key").read_bytes() == key_before
    with pytest.raises(EnrolmentError, match="holds the keys of node 'robot-7'"):
        enrol_node(tmp_path / "node", tmp_path / "outbox", node_id="robot-8")


def test_an_outbox_inside_the_node_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(EnrolmentError, match="inside the node directory"):
        enrol_node(tmp_path / "node", tmp_path / "node" / "out", node_id="robot-7")
    with pytest.raises(EnrolmentError, match="node id"):
        enrol_node(tmp_path / "node", tmp_path / "out", node_id="Robot 7")


@pytest.fixture
def enrolled(tmp_path: Path) -> tuple[Path, Path]:
    """A node that requested a certificate; returns (node dir, CSR file)."""
    request = enrol_node(
        tmp_path / "node", tmp_path / "outbox", node_id="robot-7", trust_domain=TRUST_DOMAIN
    )
    return tmp_path / "node", request.csr_file


def _chain(authority: CertificateAuthority, csr: bytes, path: Path, **kwargs: object) -> Path:
    certificate = authority.issue(csr, Profile.NODE, **kwargs)  # type: ignore[arg-type]
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM) + authority.chain_pem())
    return path


def test_install_checks_the_chain(
    tmp_path: Path, authority: CertificateAuthority, enrolled: tuple[Path, Path]
) -> None:
    node_dir, csr = enrolled
    root = authority.store.root_file
    good = _chain(authority, csr.read_bytes(), tmp_path / "good.crt")
    installed = install_certificate(node_dir, good, root)
    assert installed.node_id == "robot-7"
    assert (node_dir / "ca.pem").read_bytes() == root.read_bytes()

    other_key = _chain(authority, node_csr("robot-7"), tmp_path / "other-key.crt")
    with pytest.raises(EnrolmentError, match="not for this node's TLS key"):
        install_certificate(node_dir, other_key, root)

    foreign = CertificateAuthority.create(
        tmp_path / "foreign-ca", new_provider(tmp_path / "foreign-keys"), policy=authority.policy
    )
    foreign_chain = _chain(foreign, csr.read_bytes(), tmp_path / "foreign.crt")
    with pytest.raises(EnrolmentError, match="does not chain to the CA root"):
        install_certificate(node_dir, foreign_chain, root)

    later = installed.not_after + timedelta(seconds=1)
    with pytest.raises(EnrolmentError, match="does not chain to the CA root"):
        install_certificate(node_dir, good, root, now=later)
    assert (node_dir / "tls.crt").read_bytes() == good.read_bytes()  # refusals install nothing


def test_install_refuses_a_certificate_naming_another_node(
    tmp_path: Path, authority: CertificateAuthority, enrolled: tuple[Path, Path]
) -> None:
    """Right key, wrong name: the node's own key, but the certificate says robot-8."""
    node_dir, _ = enrolled
    key = serialization.load_pem_private_key((node_dir / "tls.key").read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    uri = x509.UniformResourceIdentifier(node_uri(TRUST_DOMAIN, "robot-8"))
    chain = _chain(authority, make_csr(key, "robot-8", [uri]), tmp_path / "robot-8.crt")
    with pytest.raises(EnrolmentError, match="not this node"):
        install_certificate(node_dir, chain, authority.store.root_file)
    assert not (node_dir / "tls.crt").exists()


def test_the_csr_binds_the_nodes_xwing_key(
    tmp_path: Path, authority: CertificateAuthority, enrolled: tuple[Path, Path]
) -> None:
    """The package key travelling beside the CSR must be the one the node signed into it."""
    _, csr = enrolled
    published = load_recipient_public_key(tmp_path / "outbox" / "robot-7.xwing.pub")
    assert xwing_fingerprint(x509.load_pem_x509_csr(csr.read_bytes())) == published.fingerprint()
    swapped = XWingPrivateKey.generate().public_key()  # e.g. replaced on the USB stick
    with pytest.raises(IssuancePolicyError, match="is not the one the node bound"):
        authority.issue(csr.read_bytes(), Profile.NODE, xwing_public_key=swapped)
    assert authority.records() == []
    certificate = authority.issue(csr.read_bytes(), Profile.NODE, xwing_public_key=published)
    (record,) = authority.records()
    assert record.serial == f"{certificate.serial_number:x}"
    assert record.xwing_sha256 == published.fingerprint()
    assert authority.audit.entries()[-1]["details"]["xwing_sha256"] == published.fingerprint()
    with pytest.raises(IssuancePolicyError, match=r"bound into its CSR \(none\)"):
        authority.issue(node_csr("robot-9"), Profile.NODE, xwing_public_key=published)
