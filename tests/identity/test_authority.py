"""The private CA against the real openssl binary: chains, EKU separation, policy, CRLs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from tensorguard.identity import (
    CertificateAuthority,
    CertificateAuthorityError,
    CertificateRequestError,
    IssuancePolicyError,
    Profile,
    RevocationError,
    node_uri,
)
from tensorguard.keys import FileKeyProvider, KeyNotFoundError, KeyPurpose
from tests.identity.conftest import (
    TRUST_DOMAIN,
    make_csr,
    new_provider,
    node_csr,
    openssl_verify,
    service_csr,
    write_pem,
)


def test_openssl_verifies_an_issued_node_chain(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    leaf = write_pem(tmp_path / "node.pem", authority.issue(node_csr("robot-1"), Profile.NODE))
    result = openssl_verify(authority, leaf, "-purpose", "sslclient")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith(": OK")


def test_eku_separates_nodes_from_services(authority: CertificateAuthority, tmp_path: Path) -> None:
    node = write_pem(tmp_path / "node.pem", authority.issue(node_csr("robot-1"), Profile.NODE))
    service = write_pem(
        tmp_path / "svc.pem",
        authority.issue(service_csr("broker.fleet.test.internal"), Profile.SERVICE),
    )
    assert openssl_verify(authority, service, "-purpose", "sslserver").returncode == 0
    assert openssl_verify(authority, node, "-purpose", "sslserver").returncode != 0
    assert openssl_verify(authority, service, "-purpose", "sslclient").returncode != 0


def test_issued_certificate_contents(authority: CertificateAuthority) -> None:
    certificate = authority.issue(node_csr("robot-1"), Profile.NODE)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        node_uri(TRUST_DOMAIN, "robot-1")
    ]
    eku = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is False
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime <= timedelta(days=30, minutes=5)
    root_bc = authority.root.extensions.get_extension_for_class(x509.BasicConstraints).value
    inter_bc = authority.intermediate.extensions.get_extension_for_class(
        x509.BasicConstraints
    ).value
    assert (root_bc.path_length, inter_bc.path_length) == (1, 0)


def test_serials_are_unique_and_recorded(authority: CertificateAuthority) -> None:
    serials = {
        authority.issue(node_csr(f"robot-{i}"), Profile.NODE).serial_number for i in range(6)
    }
    assert len(serials) == 6
    assert all(serial.bit_length() > 64 for serial in serials)
    assert {int(record.serial, 16) for record in authority.records()} == serials


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("key", "what"),
    [
        (_rsa_key(), "rsa-2048"),
        (ec.generate_private_key(ec.SECP384R1()), "ecdsa-secp384r1"),
    ],
)
def test_wrong_key_type_is_refused(
    authority: CertificateAuthority, key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, what: str
) -> None:
    with pytest.raises(IssuancePolicyError, match=f"key type {what} is not allowed"):
        authority.issue(node_csr("robot-1", key), Profile.NODE)


def test_p256_node_key_is_accepted(authority: CertificateAuthority) -> None:
    certificate = authority.issue(
        node_csr("robot-1", ec.generate_private_key(ec.SECP256R1())), Profile.NODE
    )
    assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)


def _uri(value: str) -> x509.GeneralName:
    return x509.UniformResourceIdentifier(value)


@pytest.mark.parametrize(
    ("common_name", "names", "message"),
    [
        (
            "robot-1",
            [_uri(node_uri("other.domain.internal", "robot-1"))],
            "outside this CA's namespace",
        ),
        (
            "robot-1",
            [_uri(f"spiffe://{TRUST_DOMAIN}/service/robot-1")],
            "outside this CA's namespace",
        ),
        ("Robot_1", [_uri(node_uri(TRUST_DOMAIN, "Robot_1"))], "outside this CA's namespace"),
        ("robot-1", [x509.DNSName("robot-1.fleet.test.internal")], "exactly one identity"),
        (
            "robot-1",
            [_uri(node_uri(TRUST_DOMAIN, "robot-1")), _uri(node_uri(TRUST_DOMAIN, "robot-2"))],
            "exactly one identity",
        ),
        ("robot-2", [_uri(node_uri(TRUST_DOMAIN, "robot-1"))], "is not its node id"),
        ("robot-1", [], "no subjectAltName"),
    ],
)
def test_disallowed_node_names_are_refused(
    authority: CertificateAuthority, common_name: str, names: list[x509.GeneralName], message: str
) -> None:
    csr = make_csr(ed25519.Ed25519PrivateKey.generate(), common_name, names)
    with pytest.raises(IssuancePolicyError, match=message):
        authority.issue(csr, Profile.NODE)


@pytest.mark.parametrize(
    "names",
    [
        ("evil.example.com",),
        ("broker.fleet.test.internal", "evil.example.com"),
        ("a.b.api.fleet.test.internal",),  # '*.' allows one label, not two
        ("api.fleet.test.internal",),
    ],
)
def test_service_names_outside_the_allow_list_are_refused(
    authority: CertificateAuthority, names: tuple[str, ...]
) -> None:
    with pytest.raises(IssuancePolicyError, match="not on the CA's allow-list"):
        authority.issue(service_csr(*names), Profile.SERVICE)


def test_only_allow_listed_ip_addresses_are_named(authority: CertificateAuthority) -> None:
    certificate = authority.issue(service_csr("127.0.0.1"), Profile.SERVICE)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    with pytest.raises(IssuancePolicyError, match="not on the CA's allow-list"):
        authority.issue(service_csr("10.0.0.1"), Profile.SERVICE)


def test_wildcard_allow_list_entry_allows_one_label(authority: CertificateAuthority) -> None:
    certificate = authority.issue(service_csr("eu.api.fleet.test.internal"), Profile.SERVICE)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["eu.api.fleet.test.internal"]


def test_a_node_request_is_not_a_service_certificate(authority: CertificateAuthority) -> None:
    with pytest.raises(IssuancePolicyError, match="only DNS names"):
        authority.issue(node_csr("robot-1"), Profile.SERVICE)


@pytest.mark.parametrize(
    "lifetime", [timedelta(days=31), timedelta(days=30, seconds=1), timedelta(0)]
)
def test_lifetime_outside_the_policy_is_refused(
    authority: CertificateAuthority, lifetime: timedelta
) -> None:
    with pytest.raises(IssuancePolicyError, match="lifetime"):
        authority.issue(node_csr("robot-1"), Profile.NODE, lifetime=lifetime)


def test_requested_extensions_are_refused(authority: CertificateAuthority) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    csr = make_csr(
        key,
        "robot-1",
        [_uri(node_uri(TRUST_DOMAIN, "robot-1"))],
        extensions=[x509.BasicConstraints(ca=True, path_length=None)],
    )
    with pytest.raises(IssuancePolicyError, match="extensions the CA does not accept"):
        authority.issue(csr, Profile.NODE)


def test_a_csr_with_a_bad_signature_is_refused(authority: CertificateAuthority) -> None:
    der = x509.load_pem_x509_csr(node_csr("robot-1")).public_bytes(serialization.Encoding.DER)
    tampered = der[:-1] + bytes([der[-1] ^ 0x01])  # the last byte is in the signature
    with pytest.raises(CertificateRequestError, match="signature does not verify"):
        authority.issue(tampered, Profile.NODE)


def test_a_csr_whose_key_was_swapped_is_refused(authority: CertificateAuthority) -> None:
    """The signed part names another key than the one that signed it."""
    original = x509.load_pem_x509_csr(node_csr("robot-1"))
    other = x509.load_pem_x509_csr(node_csr("robot-1"))
    der = original.public_bytes(serialization.Encoding.DER)
    own_key = original.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    other_key = other.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    with pytest.raises(CertificateRequestError, match="signature does not verify"):
        authority.issue(der.replace(own_key, other_key), Profile.NODE)


def test_garbage_is_not_a_csr(authority: CertificateAuthority) -> None:
    with pytest.raises(CertificateRequestError, match="not a PKCS#10"):
        authority.issue(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n", Profile.NODE)


def test_crl_lists_revoked_serials_and_openssl_rejects_them(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    revoked = authority.issue(node_csr("robot-1"), Profile.NODE)
    kept = authority.issue(node_csr("robot-2"), Profile.NODE)
    crl = authority.revoke(revoked.serial_number, x509.ReasonFlags.key_compromise)
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(kept.serial_number) is None
    assert crl.is_signature_valid(authority.intermediate.public_key())  # type: ignore[arg-type]
    on_disk = x509.load_pem_x509_crl(authority.store.crl_file.read_bytes())
    assert [entry.serial_number for entry in on_disk] == [revoked.serial_number]
    crl_args = ("-crl_check", "-CRLfile", str(authority.store.crl_file))
    revoked_pem = write_pem(tmp_path / "revoked.pem", revoked)
    kept_pem = write_pem(tmp_path / "kept.pem", kept)
    refused = openssl_verify(authority, revoked_pem, *crl_args)
    assert refused.returncode != 0
    assert "certificate revoked" in refused.stdout + refused.stderr
    assert openssl_verify(authority, kept_pem, *crl_args).returncode == 0
    crl_all = (
        "-crl_check_all",
        "-CRLfile",
        str(authority.store.crl_file),
        "-CRLfile",
        str(authority.store.root_crl_file),
    )
    assert openssl_verify(authority, kept_pem, *crl_all).returncode == 0
    assert openssl_verify(authority, revoked_pem).returncode == 0  # without the CRL: valid


def test_crl_numbers_increase(authority: CertificateAuthority) -> None:
    first = authority.publish_crl()
    second = authority.revoke(authority.issue(node_csr("robot-1"), Profile.NODE).serial_number)
    number = [
        crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        for crl in (first, second)
    ]
    assert number[1] == number[0] + 1


def test_revoking_an_unknown_or_revoked_serial_is_refused(authority: CertificateAuthority) -> None:
    with pytest.raises(RevocationError, match="was not issued by this CA"):
        authority.revoke(12345)
    serial = authority.issue(node_csr("robot-1"), Profile.NODE).serial_number
    authority.revoke(serial)
    with pytest.raises(RevocationError, match="already revoked"):
        authority.revoke(serial)


def test_ca_keys_are_only_in_the_provider(
    authority: CertificateAuthority, provider: FileKeyProvider
) -> None:
    """The CA directory holds no private key; the provider's records are sealed."""
    for name in ("fleet-ca-root", "fleet-ca-intermediate"):
        der = provider.load_secret(name, KeyPurpose.GENERIC)
        key = serialization.load_der_private_key(der, password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        scalar = key.private_numbers().private_value.to_bytes(32, "big")
        for path in [*authority.store.path.rglob("*"), *provider.records.directory.path.rglob("*")]:
            if path.is_file():
                assert scalar not in path.read_bytes(), path
                assert der not in path.read_bytes(), path


def test_a_ca_opened_without_its_keys_cannot_issue(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    stranger = CertificateAuthority(authority.store.path, new_provider(tmp_path / "other-keys"))
    with pytest.raises(KeyNotFoundError):
        stranger.issue(node_csr("robot-1"), Profile.NODE)


def test_a_ca_directory_with_another_cas_keys_is_refused(
    authority: CertificateAuthority, tmp_path: Path
) -> None:
    other_provider = new_provider(tmp_path / "other-keys")
    CertificateAuthority.create(tmp_path / "other-ca", other_provider)
    mixed = CertificateAuthority(authority.store.path, other_provider)
    with pytest.raises(CertificateAuthorityError, match="belong to different CAs"):
        mixed.issue(node_csr("robot-1"), Profile.NODE)


def test_an_existing_ca_is_never_overwritten(
    authority: CertificateAuthority, provider: FileKeyProvider
) -> None:
    with pytest.raises(CertificateAuthorityError, match="already exists"):
        CertificateAuthority.create(authority.store.path, provider)


def test_concurrent_issuers_lose_nothing(
    authority: CertificateAuthority, provider: FileKeyProvider
) -> None:
    """Four issuers on one CA directory: every certificate is indexed and audited."""

    def issue_three(worker: int) -> list[int]:
        ca = CertificateAuthority(authority.store.path, provider)
        return [
            ca.issue(node_csr(f"robot-{worker}-{i}"), Profile.NODE).serial_number for i in range(3)
        ]

    with ThreadPoolExecutor(max_workers=4) as pool:
        serials = [s for batch in pool.map(issue_three, range(4)) for s in batch]
    assert len(set(serials)) == 12
    assert {int(record.serial, 16) for record in authority.records()} == set(serials)
    assert len(authority.audit.entries()) == 13
    assert len(list(authority.store.issued_dir.iterdir())) == 12
