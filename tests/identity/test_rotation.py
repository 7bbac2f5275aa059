"""Rotating the issuing intermediate: new leaves from the new one, old leaves stay valid
and revocable, one CRL file and one bundle for verifiers (real openssl)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.identity import CertificateAuthority, Profile
from tensorguard.identity.enrol import enrol_node, install_certificate
from tensorguard.keys import FileKeyProvider
from tests.identity.conftest import TRUST_DOMAIN, node_csr, openssl_verify, write_pem


def _verify(authority: CertificateAuthority, leaf: Path, *extra: str) -> int:
    bundle = authority.store.bundle_file
    return openssl_verify(authority, leaf, *extra, untrusted=bundle).returncode


def test_old_and_new_leaves_verify_and_revoke_after_a_rotation(
    authority: CertificateAuthority, provider: FileKeyProvider, tmp_path: Path
) -> None:
    old_leaf = authority.issue(node_csr("robot-1"), Profile.NODE)
    old_issuer = authority.intermediate
    rotated = authority.rotate_intermediate()
    assert authority.generation == 2
    assert rotated.subject != old_issuer.subject
    new_leaf = authority.issue(node_csr("robot-2"), Profile.NODE)
    assert new_leaf.issuer == rotated.subject
    assert old_leaf.issuer == old_issuer.subject
    bundle = x509.load_pem_x509_certificates(authority.store.bundle_file.read_bytes())
    assert [c.subject for c in bundle] == [
        rotated.subject,
        old_issuer.subject,
        authority.root.subject,
    ]

    old_pem, new_pem = (
        write_pem(tmp_path / "old.pem", old_leaf),
        write_pem(tmp_path / "new.pem", new_leaf),
    )
    crl_check = ("-crl_check", "-CRLfile", str(authority.store.crl_file))
    assert _verify(authority, old_pem, *crl_check) == 0  # the retired one's CRL is there
    assert _verify(authority, new_pem, *crl_check) == 0

    crl = authority.revoke(old_leaf.serial_number)  # signed by the retired intermediate
    assert crl.issuer == old_issuer.subject
    assert crl.is_signature_valid(old_issuer.public_key())  # type: ignore[arg-type]
    crls = authority.published_crls()
    assert [c.issuer for c in crls] == [rotated.subject, old_issuer.subject]
    current = crls[0]
    assert current.get_revoked_certificate_by_serial_number(old_leaf.serial_number) is None
    assert _verify(authority, old_pem, *crl_check) != 0
    assert _verify(authority, new_pem, *crl_check) == 0

    reopened = CertificateAuthority(authority.store.path, provider)
    assert reopened.generation == 2
    third = reopened.revoke(reopened.issue(node_csr("robot-3"), Profile.NODE).serial_number)
    assert third.issuer == rotated.subject
    events = [entry["event"] for entry in reopened.audit.entries()]
    assert events.count("intermediate-rotated") == 1


def test_an_enrolled_node_installs_a_chain_from_the_new_intermediate(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    authority.rotate_intermediate()
    request = enrol_node(
        tmp_path / "node", tmp_path / "outbox", node_id="robot-7", trust_domain=TRUST_DOMAIN
    )
    leaf = authority.issue(request.csr_file.read_bytes(), Profile.NODE)
    chain = tmp_path / "robot-7.crt"
    chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + authority.chain_pem())
    installed = install_certificate(tmp_path / "node", chain, authority.store.root_file)
    assert installed.serial == leaf.serial_number


def test_rotate_intermediate_on_the_command_line(
    ca_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = str(ca_env)
    assert main(["identity", "init", "--ca-dir", ca_dir]) == ExitCode.OK
    assert main(["identity", "rotate-intermediate", "--ca-dir", ca_dir, "--days", "90"]) == 0
    assert '"generation": 2' in capsys.readouterr().out
    assert main(["identity", "rotate-intermediate", "--ca-dir", ca_dir, "--days", "99999"]) == 3
    assert "outlive the root" in capsys.readouterr().err
