"""The fleet's private CA: a root, one issuing intermediate, issuance from CSRs, CRLs.

The intermediate can be rotated (:meth:`CertificateAuthority.rotate_intermediate`): the
new one issues from then on, earlier ones stay trusted and keep signing their CRLs until
their own certificates expire.

Hierarchy::

    root (ECDSA P-256, CA, pathLen 1, keyCertSign+cRLSign)     key: <name>-root
      └─ intermediate (CA, pathLen 0, EKU clientAuth+serverAuth) key: <name>-intermediate
           ├─ node certificates    (EKU clientAuth, URI SAN spiffe://<domain>/node/<id>)
           └─ service certificates (EKU serverAuth, allow-listed DNS SANs)

**Where the CA keys live.** The key provider (:mod:`tensorguard.keys`) signs only with
composite ML-DSA-65 + Ed25519 keys, which X.509 tooling (OpenSSL, Mosquitto, Python's
``ssl``) does not verify, and :mod:`cryptography` cannot sign a certificate with a key it
does not hold. So the root and intermediate ECDSA keys are stored *sealed* in the
provider as ``generic-secret`` records (AES-256-GCM under ``TG_KEY_MASTER`` with the file
provider; under a token-held AES key with PKCS#11) and unsealed into memory only for the
one signing operation that needs them. The CA directory (:mod:`.store`) holds only
public material. The root key is needed only to create the intermediate and the root
CRL, so it can stay in a provider that is kept offline otherwise.

Every issuance applies :func:`tensorguard.identity.policy.decide`; serials are random
159-bit numbers checked unique against the index under the directory lock.
Creation, issuance and revocation are appended to the signed audit log
(:mod:`tensorguard.identity.audit`, key ``<name>-audit``: a composite signing key that
the provider signs with natively) before they take effect.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tensorguard.crypto import CompositeVerifyKey, XWingPublicKey
from tensorguard.durable import DurableWriteError, ensure_directory
from tensorguard.errors import TensorGuardError
from tensorguard.identity.audit import AuditEvent, AuditLog, DetailValue
from tensorguard.identity.csr import parse_csr, xwing_fingerprint
from tensorguard.identity.errors import (
    CertificateAuthorityError,
    IdentityConfigError,
    IssuancePolicyError,
    RevocationError,
)
from tensorguard.identity.policy import PROFILE_EKU, Approval, IssuancePolicy, Profile, decide
from tensorguard.identity.store import CaDirectory, CaIndex, IssuedRecord, serial_hex
from tensorguard.keys import KeyProvider, KeyPurpose, validate_key_name
from tensorguard.tgsp import load_verify_key, write_key_file

LOGGER = logging.getLogger(__name__)

DEFAULT_CA_NAME = "fleet-ca"
DEFAULT_ROOT_DAYS = 3650
DEFAULT_INTERMEDIATE_DAYS = 365
CLOCK_SKEW = timedelta(minutes=5)
SERIAL_ATTEMPTS = 8


def utc_now() -> datetime:
    """The current time in UTC, to the second."""
    return datetime.now(UTC).replace(microsecond=0)


def _root_key_name(ca_name: str) -> str:
    return validate_key_name(f"{ca_name}-root")


def _intermediate_key_name(ca_name: str, generation: int = 1) -> str:
    suffix = "" if generation == 1 else f"-g{generation}"
    return validate_key_name(f"{ca_name}-intermediate{suffix}")


def _audit_key_name(ca_name: str) -> str:
    return validate_key_name(f"{ca_name}-audit")


def new_job_id(event: AuditEvent) -> str:
    """A fresh job id for an operation that was not started by a named job."""
    return f"{event.value}-{uuid.uuid4().hex[:16]}"


def _seal_new_key(provider: KeyProvider, name: str) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    provider.store_secret(name, KeyPurpose.GENERIC, der)
    return key


def _unseal_key(provider: KeyProvider, name: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_der_private_key(
        provider.load_secret(name, KeyPurpose.GENERIC), password=None
    )
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CertificateAuthorityError(f"key {name!r} in the provider is not an ECDSA CA key")
    return key


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def _ca_subject(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "TensorGuard"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_certificate(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    path_length: int,
    not_before: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """A CA certificate; self-signed when ``issuer`` is None."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject if issuer is None else issuer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_before + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    authority_key = issuer_key.public_key() if issuer is None else issuer.public_key()
    if isinstance(authority_key, ec.EllipticCurvePublicKey):
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key), critical=False
        )
    if issuer is not None:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _leaf_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


class CertificateAuthority:
    """A CA directory plus the key provider holding its sealed keys."""

    def __init__(self, directory: Path, provider: KeyProvider) -> None:
        """Open the CA in ``directory``; its keys are read from ``provider`` when signing."""
        self.store = CaDirectory(directory)
        self.provider = provider
        self.policy = self.store.read_policy()
        self.root = self.store.read_certificate(self.store.root_file)
        self.intermediate = self.store.read_certificate(self.store.intermediate_file)
        self.retired = self.store.read_retired()
        index = self.store.read_index()
        self.ca_name, self.generation = index.ca_name, index.generation
        self.audit_key = self._pinned_audit_key()
        self.audit = AuditLog(self.store.audit_file, self.audit_key)

    def _pinned_audit_key(self) -> CompositeVerifyKey:
        try:
            return load_verify_key(self.store.audit_key_file)
        except TensorGuardError as exc:
            raise CertificateAuthorityError(f"cannot load the CA's audit key: {exc}") from exc

    def _audit(
        self, event: AuditEvent, job_id: str | None, endpoint_id: str, **details: DetailValue
    ) -> None:
        """Append a signed audit entry; the operation fails if it cannot be recorded."""
        self.audit.append(
            self.provider.signer(_audit_key_name(self.ca_name)),
            event,
            job_id=job_id or new_job_id(event),
            endpoint_id=endpoint_id,
            details=details,
        )

    def record_event(
        self,
        event: AuditEvent,
        *,
        job_id: str,
        endpoint_id: str,
        details: dict[str, DetailValue],
    ) -> None:
        """Append another identity component's event (a renewal transition) to the CA's
        signed audit log, under the CA directory's lock; raises if it cannot be recorded."""
        with self.store.locked():
            self._audit(event, job_id, endpoint_id, **details)

    def __repr__(self) -> str:
        return f"CertificateAuthority(directory={str(self.store.path)!r}, ca_name={self.ca_name!r})"

    @classmethod
    def create(
        cls,
        directory: Path,
        provider: KeyProvider,
        *,
        policy: IssuancePolicy | None = None,
        ca_name: str = DEFAULT_CA_NAME,
        root_days: int = DEFAULT_ROOT_DAYS,
        intermediate_days: int = DEFAULT_INTERMEDIATE_DAYS,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """Create the root and intermediate, seal their keys in ``provider``, write the CA.

        Refuses an existing CA directory and existing key names (``KeyExistsError``).
        """
        policy = policy or IssuancePolicy()
        if not 0 < intermediate_days <= root_days:
            raise CertificateAuthorityError(
                f"the intermediate's lifetime ({intermediate_days} days) must be positive and "
                f"within the root's ({root_days} days)"
            )
        store = CaDirectory(directory)
        store.create_layout()
        root_name, intermediate_name = _root_key_name(ca_name), _intermediate_key_name(ca_name)
        now = now or utc_now()
        root_key = _seal_new_key(provider, root_name)
        intermediate_key = _seal_new_key(provider, intermediate_name)
        domain = policy.trust_domain
        root = _ca_certificate(
            _ca_subject(f"{ca_name} root ({domain})"),
            root_key.public_key(),
            None,
            root_key,
            path_length=1,
            not_before=now - CLOCK_SKEW,
            lifetime=timedelta(days=root_days),
        )
        intermediate = _ca_certificate(
            _ca_subject(f"{ca_name} issuing CA ({domain})"),
            intermediate_key.public_key(),
            root,
            root_key,
            path_length=0,
            not_before=now - CLOCK_SKEW,
            lifetime=timedelta(days=intermediate_days),
        )
        audit_key = provider.generate_signing_key(_audit_key_name(ca_name)).public_key()
        try:
            write_key_file(store.audit_key_file, audit_key)
        except TensorGuardError as exc:
            raise CertificateAuthorityError(f"cannot write the audit key: {exc}") from exc
        AuditLog(store.audit_file, audit_key).append(
            provider.signer(_audit_key_name(ca_name)),
            AuditEvent.CA_CREATED,
            job_id=new_job_id(AuditEvent.CA_CREATED),
            endpoint_id=ca_name,
            details={
                "root_sha256": _fingerprint(root),
                "intermediate_sha256": _fingerprint(intermediate),
                "trust_domain": domain,
                "key_provider": provider.kind,
            },
        )
        store.write_policy(policy)
        store.write_index(CaIndex(ca_name=ca_name))
        store.write_certificate(store.intermediate_file, intermediate)
        pem = serialization.Encoding.PEM
        store.write(store.bundle_file, intermediate.public_bytes(pem) + root.public_bytes(pem))
        root_crl = _signed_crl(root, root_key, [], 1, now, intermediate.not_valid_after_utc)
        store.write(store.root_crl_file, root_crl.public_bytes(pem))
        store.write_certificate(store.root_file, root)  # last: marks the CA as complete
        authority = cls(directory, provider)
        with store.locked():
            index = store.read_index()
            index.root_crl_number = 1
            authority._publish_crl(index, now)
        LOGGER.info(
            "created CA %r in %s: root %s, intermediate %s (keys sealed in the %s provider)",
            ca_name,
            directory,
            _fingerprint(root),
            _fingerprint(intermediate),
            provider.kind,
        )
        return authority

    def _issuer(self, generation: int) -> x509.Certificate:
        """The intermediate certificate of ``generation`` (current or retired)."""
        if generation == self.generation:
            return self.intermediate
        if generation not in self.retired:
            raise CertificateAuthorityError(
                f"intermediate generation {generation} is missing from {self.store.retired_dir}"
            )
        return self.retired[generation]

    def _intermediate_key(self, generation: int | None = None) -> ec.EllipticCurvePrivateKey:
        generation = self.generation if generation is None else generation
        key = _unseal_key(self.provider, _intermediate_key_name(self.ca_name, generation))
        if key.public_key() != self._issuer(generation).public_key():
            raise CertificateAuthorityError(
                f"the intermediate key (generation {generation}) in the provider does not "
                f"match the CA directory {self.store.path}: the CA directory and the key "
                "provider belong to different CAs"
            )
        return key

    def _live_generations(self, now: datetime) -> list[int]:
        """Current generation first, then retired ones whose certificate has not expired."""
        retired = [g for g, c in sorted(self.retired.items()) if c.not_valid_after_utc > now]
        return [self.generation, *reversed(retired)]

    def rotate_intermediate(
        self,
        *,
        intermediate_days: int = DEFAULT_INTERMEDIATE_DAYS,
        now: datetime | None = None,
        job_id: str | None = None,
    ) -> x509.Certificate:
        """Replace the issuing intermediate with a new key and certificate from the root.

        Certificates issued by the old intermediate stay valid until they expire: it moves
        to ``retired/``, stays in ``ca-bundle.pem`` and keeps signing its CRL (all live
        intermediates' CRLs are in ``crl.pem``). Needs the root key (unsealed for this).
        """
        now = now or utc_now()
        if now + timedelta(days=intermediate_days) > self.root.not_valid_after_utc:
            raise IdentityConfigError(
                f"an intermediate of {intermediate_days} days would outlive the root (until "
                f"{self.root.not_valid_after_utc:%Y-%m-%d}); choose fewer days, or a new CA"
            )
        with self.store.locked():
            index = self.store.read_index()
            root_key = _unseal_key(self.provider, _root_key_name(self.ca_name))
            if root_key.public_key() != self.root.public_key():
                raise CertificateAuthorityError(
                    f"the root key in the provider does not match {self.store.root_file}"
                )
            generation = index.generation + 1
            key = _seal_new_key(self.provider, _intermediate_key_name(self.ca_name, generation))
            domain = self.policy.trust_domain
            certificate = _ca_certificate(
                _ca_subject(f"{self.ca_name} issuing CA g{generation} ({domain})"),
                key.public_key(),
                self.root,
                root_key,
                path_length=0,
                not_before=now - CLOCK_SKEW,
                lifetime=timedelta(days=intermediate_days),
            )
            self._audit(
                AuditEvent.INTERMEDIATE_ROTATED,
                job_id,
                self.ca_name,
                generation=generation,
                intermediate_sha256=_fingerprint(certificate),
                previous_sha256=_fingerprint(self.intermediate),
            )
            try:
                ensure_directory(self.store.retired_dir, mode=0o755)
            except DurableWriteError as exc:
                raise CertificateAuthorityError(str(exc)) from exc
            self.store.write_certificate(
                self.store.retired_file(self.generation), self.intermediate
            )
            pem = serialization.Encoding.PEM
            self.store.write(self.store.intermediate_file, certificate.public_bytes(pem))
            index.generation = generation
            self.store.write_index(index)
            self.retired[self.generation] = self.intermediate
            self.intermediate, self.generation = certificate, generation
            self._publish_crl(index, now)
        LOGGER.info("rotated the intermediate of CA %r to generation %d", self.ca_name, generation)
        return certificate

    def issue(
        self,
        csr_pem: bytes,
        profile: Profile,
        *,
        lifetime: timedelta | None = None,
        now: datetime | None = None,
        job_id: str | None = None,
        xwing_public_key: XWingPublicKey | None = None,
    ) -> x509.Certificate:
        """Check ``csr_pem`` (signature, then policy) and issue a certificate for ``profile``.

        With ``xwing_public_key`` (the package key that came with the CSR) the CSR must
        bind exactly that key (:data:`~tensorguard.identity.csr.XWING_KEY_ATTRIBUTE`);
        the bound fingerprint is recorded in the index and the audit log.

        The issuance is recorded in the audit log (under ``job_id``, or a new id) before
        the certificate is stored; nothing is issued when that record cannot be written.

        Raises :class:`~tensorguard.identity.errors.CertificateRequestError` for an
        unusable CSR and :class:`IssuancePolicyError` for a policy refusal.
        """
        csr = parse_csr(csr_pem)
        approval = decide(self.policy, csr, profile, lifetime)
        bound = xwing_fingerprint(csr)
        if xwing_public_key is not None and bound != xwing_public_key.fingerprint():
            raise IssuancePolicyError(
                f"the X-Wing public key handed in with the request "
                f"({xwing_public_key.fingerprint()[:16]}…) is not the one the node bound into "
                f"its CSR ({'none' if bound is None else bound[:16] + '…'}): it was swapped "
                "or belongs to another request; take both files from the same enrolment"
            )
        now = now or utc_now()
        not_after = now + approval.lifetime
        if not_after > self.intermediate.not_valid_after_utc:
            raise IssuancePolicyError(
                f"the certificate would outlive the issuing CA (until "
                f"{self.intermediate.not_valid_after_utc:%Y-%m-%d}); rotate the intermediate "
                "or ask for a shorter lifetime"
            )
        if now < self.intermediate.not_valid_before_utc:
            raise IssuancePolicyError("the issuing CA is not valid yet at the issuance time")
        with self.store.locked():
            index = self.store.read_index()
            serial = self._unique_serial(index)
            certificate = self._sign_leaf(csr, approval, serial, now - CLOCK_SKEW, not_after)
            self._audit(
                AuditEvent.ISSUED,
                job_id,
                approval.common_name,
                serial=serial_hex(serial),
                profile=profile.value,
                names=[str(name.value) for name in approval.names],
                not_after=not_after.isoformat(),
                sha256=_fingerprint(certificate),
                xwing_sha256=bound,
            )
            self.store.write_certificate(self.store.issued_file(serial), certificate)
            index.certificates[serial_hex(serial)] = IssuedRecord(
                serial=serial_hex(serial),
                profile=profile,
                common_name=approval.common_name,
                names=tuple(str(name.value) for name in approval.names),
                not_before=certificate.not_valid_before_utc,
                not_after=certificate.not_valid_after_utc,
                sha256=_fingerprint(certificate),
                issuer_generation=self.generation,
                xwing_sha256=bound,
            )
            self.store.write_index(index)
        LOGGER.info(
            "issued %s certificate %s for %r until %s",
            profile.value,
            serial_hex(serial),
            approval.common_name,
            not_after.isoformat(),
        )
        return certificate

    def _unique_serial(self, index: CaIndex) -> int:
        for _ in range(SERIAL_ATTEMPTS):
            serial = x509.random_serial_number()
            if (
                serial_hex(serial) not in index.certificates
                and not self.store.issued_file(serial).exists()
            ):
                return serial
        raise CertificateAuthorityError(
            f"no unused serial after {SERIAL_ATTEMPTS} random draws; the random source is broken"
        )

    def _sign_leaf(
        self,
        csr: x509.CertificateSigningRequest,
        approval: Approval,
        serial: int,
        not_before: datetime,
        not_after: datetime,
    ) -> x509.Certificate:
        intermediate_key = self._intermediate_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(approval.subject)
            .issuer_name(self.intermediate.subject)
            .public_key(csr.public_key())
            .serial_number(serial)
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(), critical=True)
            .add_extension(x509.ExtendedKeyUsage([PROFILE_EKU[approval.profile]]), critical=False)
            .add_extension(x509.SubjectAlternativeName(list(approval.names)), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(intermediate_key.public_key()),
                critical=False,
            )
        )
        return builder.sign(intermediate_key, hashes.SHA256())

    def revoke(
        self,
        serial: int,
        reason: x509.ReasonFlags = x509.ReasonFlags.unspecified,
        *,
        now: datetime | None = None,
        job_id: str | None = None,
    ) -> x509.CertificateRevocationList:
        """Record ``serial`` as revoked (audit log first) and publish a new signed CRL."""
        now = now or utc_now()
        with self.store.locked():
            index = self.store.read_index()
            record = index.certificates.get(serial_hex(serial))
            if record is None:
                raise RevocationError(
                    f"serial {serial_hex(serial)} was not issued by this CA; list issued "
                    f"certificates in {self.store.index_file}"
                )
            if record.revoked_at is not None:
                raise RevocationError(
                    f"serial {serial_hex(serial)} was already revoked at "
                    f"{record.revoked_at.isoformat()}"
                )
            self._audit(
                AuditEvent.REVOKED,
                job_id,
                record.common_name,
                serial=record.serial,
                reason=reason.value,
            )
            record.revoked_at = now
            record.reason = reason.value
            crl = self._publish_crl(index, now)[record.issuer_generation]
        LOGGER.info("revoked certificate %s (%s)", serial_hex(serial), reason.value)
        return crl

    def publish_crl(self, *, now: datetime | None = None) -> x509.CertificateRevocationList:
        """Re-sign the intermediate's CRL with fresh dates (run before ``next_update``)."""
        with self.store.locked():
            return self._publish_crl(self.store.read_index(), now or utc_now())[self.generation]

    def _publish_crl(
        self, index: CaIndex, now: datetime
    ) -> dict[int, x509.CertificateRevocationList]:
        """Sign a CRL for every live intermediate; write them (current first) and the bundle."""
        next_update = now + timedelta(days=self.policy.crl_validity_days)
        crls: dict[int, x509.CertificateRevocationList] = {}
        for generation in self._live_generations(now):
            index.crl_number += 1
            revoked = [
                (
                    int(record.serial, 16),
                    record.revoked_at,
                    x509.ReasonFlags(record.reason or "unspecified"),
                )
                for record in index.certificates.values()
                if record.revoked_at is not None and record.issuer_generation == generation
            ]
            crls[generation] = _signed_crl(
                self._issuer(generation),
                self._intermediate_key(generation),
                revoked,
                index.crl_number,
                now,
                next_update,
            )
        pem = serialization.Encoding.PEM
        self.store.write_index(index)
        self.store.write(self.store.crl_file, b"".join(c.public_bytes(pem) for c in crls.values()))
        bundle = [self._issuer(generation) for generation in crls] + [self.root]
        self.store.write(self.store.bundle_file, b"".join(c.public_bytes(pem) for c in bundle))
        return crls

    def published_crls(self) -> list[x509.CertificateRevocationList]:
        """The CRLs in ``crl.pem`` as verifiers see them (one per live intermediate)."""
        data = self.store.crl_file.read_bytes()
        marker = b"-----END X509 CRL-----"
        return [
            x509.load_pem_x509_crl(block + marker + b"\n")
            for block in data.split(marker)
            if block.strip()
        ]

    def chain_pem(self) -> bytes:
        """The intermediate certificate as PEM (sent with each leaf)."""
        return self.intermediate.public_bytes(serialization.Encoding.PEM)

    def records(self) -> list[IssuedRecord]:
        """Every issued certificate, from the index."""
        return list(self.store.read_index().certificates.values())


def _signed_crl(
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revoked: Sequence[tuple[int, datetime | None, x509.ReasonFlags]],
    number: int,
    now: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(now)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for serial, revoked_at, reason in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(revoked_at or now)
        )
        if reason is not x509.ReasonFlags.unspecified:
            entry = entry.add_extension(x509.CRLReason(reason), critical=False)
        builder = builder.add_revoked_certificate(entry.build())
    return builder.sign(issuer_key, hashes.SHA256())
