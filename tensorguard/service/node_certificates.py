"""Checking an edge node's TLS client certificate on every node request.

The TLS handshake (:mod:`tensorguard.service.tls_server`) has already refused a
certificate that does not chain to the fleet CA bundle or is outside its validity; this
module decides, per request and independently of the handshake:

1. the chain again, with ``cryptography``'s X.509 client verifier at the request time
   (roots: the self-signed certificates of the bundle; intermediates: the others), which
   also requires EKU ``clientAuth`` — a certificate that expired during a long-lived
   connection is refused here. A verified chain is remembered while all its
   certificates are valid, so a node's requests cost one chain verification, not one
   each;
2. revocation, against the CRL from the certificate's issuer in the CRL file, whose
   signature must verify under that issuer and whose ``nextUpdate`` must not have
   passed. The file is read again whenever it changes (size, mtime or inode), so a
   revocation copied in takes effect on the next request without a restart. A missing,
   unreadable, unsigned or stale CRL refuses every node request
   (:class:`RevocationCheckError`, 503): never accepted unchecked;
3. the identity: exactly one URI SAN ``spiffe://<trust domain>/node/<node id>`` and a
   subject ``CN`` equal to that node id (the fleet CA's node profile).

:meth:`NodeCertificateVerifier.node_id` returns the node id the certificate proves.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from tensorguard.identity.policy import NODE_ID_PATTERN, NODE_PATH
from tensorguard.identity.store import serial_hex
from tensorguard.service.errors import (
    AuthenticationError,
    RevocationCheckError,
    ServiceConfigError,
)

LOG = logging.getLogger(__name__)
TLS_EXTENSION = "tls"
"""The ASGI scope extension holding the connection's client certificate."""
MAX_PEM_BYTES = 4 * 1024 * 1024
CACHE_SIZE = 4096
"""Verified chains (and CRL signatures) remembered at most."""
_CRL_BLOCK = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def peer_certificate(scope: Mapping[str, Any]) -> bytes | None:
    """The DER client certificate of the request's TLS connection, or None.

    Put there by :class:`tensorguard.service.tls_server.PeerCertificateProtocol` from
    the TLS connection (never from a header).
    """
    extensions = scope.get("extensions") or {}
    tls = extensions.get(TLS_EXTENSION) or {}
    chain = tls.get("client_cert_chain") or []
    if not chain or tls.get("client_cert_error") is not None:
        return None
    return ssl.PEM_cert_to_DER_cert(chain[0])


def _read_limited(path: Path, what: str) -> bytes:
    with path.open("rb") as handle:
        data = handle.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise ValueError(f"the {what} {path} is larger than {MAX_PEM_BYTES} bytes")
    return data


def parse_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every PEM CRL in ``data`` (the CA's ``crl.pem`` holds one per live intermediate)."""
    blocks = _CRL_BLOCK.findall(data)
    if not blocks:
        raise ValueError("no PEM X509 CRL in it")
    return [x509.load_pem_x509_crl(block + b"\n") for block in blocks]


@dataclass(frozen=True)
class _Loaded:
    stamp: tuple[int, int, int]
    crls: tuple[x509.CertificateRevocationList, ...]


class CrlFile:
    """The CRLs in a file, read again when the file changes (thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._loaded: _Loaded | None = None
        self._lock = threading.Lock()

    def current(self) -> tuple[x509.CertificateRevocationList, ...]:
        """The CRLs as the file holds them now; :class:`RevocationCheckError` if unreadable."""
        try:
            status = os.stat(self.path)
        except OSError as exc:
            raise RevocationCheckError(
                f"the CRL file {self.path} cannot be read ({exc.strerror or exc}); copy the "
                "fleet CA's crl.pem there"
            ) from None
        stamp = (status.st_mtime_ns, status.st_size, status.st_ino)
        with self._lock:
            if self._loaded is None or self._loaded.stamp != stamp:
                try:
                    crls = tuple(parse_crls(_read_limited(self.path, "CRL file")))
                except (OSError, ValueError) as exc:
                    raise RevocationCheckError(
                        f"the CRL file {self.path} is not usable ({exc}); copy the fleet CA's "
                        "crl.pem there"
                    ) from None
                self._loaded = _Loaded(stamp, crls)
                LOG.info("loaded %d CRL(s) from %s", len(crls), self.path)
            return self._loaded.crls


def _load_bundle(path: Path) -> tuple[list[x509.Certificate], list[x509.Certificate]]:
    """(roots, intermediates) of a CA bundle file; refuse one without a root."""
    try:
        certificates = x509.load_pem_x509_certificates(_read_limited(path, "client CA bundle"))
    except (OSError, ValueError) as exc:
        raise ServiceConfigError(
            f"TG_TLS_CLIENT_CA_FILE {path} is not usable ({exc}); point it at the fleet CA's "
            "ca-bundle.pem"
        ) from None
    roots = [c for c in certificates if c.issuer == c.subject]
    if not roots:
        raise ServiceConfigError(
            f"TG_TLS_CLIENT_CA_FILE {path} holds no root (self-signed) certificate; use the "
            "fleet CA's ca-bundle.pem (intermediates and root)"
        )
    return roots, [c for c in certificates if c.issuer != c.subject]


def node_identity(certificate: x509.Certificate) -> str:
    """The node id a fleet node certificate names (URI SAN and CN must agree)."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    common_names = [
        str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    if len(uris) == 1:
        parts = urlsplit(uris[0])
        node_id = parts.path.removeprefix(NODE_PATH)
        if (
            parts.scheme == "spiffe"
            and parts.netloc
            and parts.path.startswith(NODE_PATH)
            and NODE_ID_PATTERN.fullmatch(node_id)
            and not parts.query
            and not parts.fragment
            and common_names == [node_id]
        ):
            return node_id
    raise AuthenticationError(
        "the client certificate is not a fleet node certificate (it must name one URI "
        "spiffe://<trust domain>/node/<node id> and CN=<node id>)"
    )


@dataclass(frozen=True)
class _Verified:
    """What a verified chain proves, and while it stays valid."""

    node_id: str
    serial: int
    issuer: x509.Certificate
    valid_from: datetime
    valid_until: datetime


class NodeCertificateVerifier:
    """Verifies node client certificates against the fleet CA bundle and its CRLs."""

    def __init__(self, client_ca_file: Path, crl_file: Path) -> None:
        """Load the bundle and the CRL file now; refuse to start if either is unusable."""
        self._roots, self._intermediates = _load_bundle(client_ca_file)
        self._store = verification.Store(self._roots)
        self._lock = threading.Lock()
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()
        self._crl_signatures: dict[tuple[bytes, bytes], bool] = {}
        self.crl_file = CrlFile(crl_file)
        try:
            crls = self.crl_file.current()
        except RevocationCheckError as exc:
            raise ServiceConfigError(f"TG_TLS_CRL_FILE: {exc}") from None
        now = datetime.now(UTC)
        for crl in crls:
            if crl.next_update_utc is None or crl.next_update_utc <= now:
                LOG.warning(
                    "the CRL of %s in %s is past its nextUpdate: node requests are refused "
                    "until a current crl.pem is copied there (tensorguard identity crl)",
                    crl.issuer.rfc4514_string(),
                    crl_file,
                )

    def node_id(self, certificate_der: bytes, now: datetime | None = None) -> str:
        """The node id ``certificate_der`` proves at ``now`` (default: the current time).

        Raises :class:`AuthenticationError` for a certificate that does not verify as a
        fleet client certificate, is revoked or names no node, and
        :class:`RevocationCheckError` when its revocation cannot be decided.

        A verified chain is remembered (by the certificate's SHA-256, at most
        :data:`CACHE_SIZE`) for as long as every certificate in it is within its
        validity; the revocation check runs on every call.
        """
        moment = now or datetime.now(UTC)
        key = hashlib.sha256(certificate_der).digest()
        with self._lock:
            entry = self._verified.get(key)
            if entry is not None:
                self._verified.move_to_end(key)
        if entry is None or not entry.valid_from <= moment < entry.valid_until:
            entry = self._verify(certificate_der, moment)
            with self._lock:
                self._verified[key] = entry
                while len(self._verified) > CACHE_SIZE:
                    self._verified.popitem(last=False)
        self._check_revocation(entry.serial, entry.issuer, moment)
        return entry.node_id

    def _verify(self, certificate_der: bytes, moment: datetime) -> _Verified:
        try:
            leaf = x509.load_der_x509_certificate(certificate_der)
        except ValueError:
            raise AuthenticationError("the client certificate cannot be parsed") from None
        verifier = (
            verification.PolicyBuilder().store(self._store).time(moment).build_client_verifier()
        )
        try:
            verified = verifier.verify(leaf, self._intermediates)
        except verification.VerificationError as exc:
            raise AuthenticationError(
                f"the client certificate does not verify as a fleet client certificate at "
                f"{moment:%Y-%m-%dT%H:%M:%SZ}: {exc}"
            ) from None
        return _Verified(
            node_id=node_identity(leaf),
            serial=leaf.serial_number,
            issuer=verified.chain[1],
            valid_from=max(c.not_valid_before_utc for c in verified.chain),
            valid_until=min(c.not_valid_after_utc for c in verified.chain),
        )

    def _crl_is_from(self, crl: x509.CertificateRevocationList, issuer: x509.Certificate) -> bool:
        """Whether ``crl`` is signed by ``issuer`` (remembered per CRL and issuer)."""
        if crl.issuer != issuer.subject:
            return False
        key = (crl.fingerprint(hashes.SHA256()), issuer.fingerprint(hashes.SHA256()))
        with self._lock:
            known = self._crl_signatures.get(key)
        if known is None:
            issuer_key = issuer.public_key()
            if not isinstance(issuer_key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
                return False
            known = crl.is_signature_valid(issuer_key)
            with self._lock:
                if len(self._crl_signatures) >= CACHE_SIZE:
                    self._crl_signatures.clear()
                self._crl_signatures[key] = known
        return known

    def _check_revocation(self, serial: int, issuer: x509.Certificate, now: datetime) -> None:
        candidates = [crl for crl in self.crl_file.current() if self._crl_is_from(crl, issuer)]
        if not candidates:
            raise RevocationCheckError(
                f"{self.crl_file.path} has no CRL signed by {issuer.subject.rfc4514_string()}, "
                "the issuer of the client certificate; copy the fleet CA's current crl.pem"
            )
        crl = max(candidates, key=lambda c: c.last_update_utc)
        if crl.next_update_utc is None or crl.next_update_utc <= now:
            raise RevocationCheckError(
                f"the CRL of {issuer.subject.rfc4514_string()} in {self.crl_file.path} is past "
                "its nextUpdate; run `tensorguard identity crl` and copy crl.pem there"
            )
        if crl.get_revoked_certificate_by_serial_number(serial) is not None:
            raise AuthenticationError(
                f"the client certificate (serial {serial_hex(serial)}) is revoked"
            )
