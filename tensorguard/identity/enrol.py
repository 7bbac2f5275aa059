"""Enrolment on the node: its keys are made here and never leave its directory.

``enrol_node`` runs on the edge node. It creates, in the node's private directory
(0700), the node's TLS key (Ed25519 by default, 0600) and — when the node has none — its
X-Wing recipient key for packages (a ``tensorguard-key`` file, 0600), then writes to an
*outbox* directory only public material: a CSR signed by the TLS key and the X-Wing
public key. The operator takes those two files to the CA (``tensorguard identity issue
--csr``) and to the publisher's recipients directory; the certificate chain comes back
and ``install_certificate`` checks it against the node's own key, identity and the CA
root before installing it next to the key. Offline enrolment: no network is needed.

Node directory after enrolment::

    identity.json        node id and trust domain (what the CSR asked for)
    tls.key              the TLS private key (PKCS#8 PEM, 0600)
    <node id>.xwing.key  the X-Wing private key (unless the agent already had one)
    tls.crt              the installed chain (leaf + intermediate), after install
    ca.pem               the CA root the node trusts, after install

The three ``tls_*`` paths go into the agent's ``mqtt`` settings (docs/FLEET.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509 import verification
from cryptography.x509.oid import NameOID

from tensorguard.codec import CodecError, parse_json_object
from tensorguard.crypto import XWingPrivateKey
from tensorguard.durable import DurableWriteError, atomic_write_bytes, ensure_directory
from tensorguard.errors import TensorGuardError
from tensorguard.identity.csr import XWING_KEY_ATTRIBUTE
from tensorguard.identity.errors import EnrolmentError
from tensorguard.identity.keytypes import KeyType, generate_private_key
from tensorguard.identity.policy import DEFAULT_TRUST_DOMAIN, NODE_ID_PATTERN, node_uri
from tensorguard.tgsp import load_recipient_private_key, write_key_file

IDENTITY_FILE = "identity.json"
TLS_KEY_FILE = "tls.key"
TLS_CERT_FILE = "tls.crt"
CA_FILE = "ca.pem"
MAX_CHAIN_BYTES = 256 * 1024

NodeKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class EnrolmentRequest:
    """What ``enrol_node`` made: the public files to hand over, and what was generated."""

    node_id: str
    csr_file: Path
    xwing_public_key_file: Path
    xwing_key_file: Path
    tls_key_generated: bool
    xwing_key_generated: bool


@dataclass(frozen=True)
class InstalledCertificate:
    """An installed node certificate and the files the agent's MQTT settings point at."""

    node_id: str
    serial: int
    not_after: datetime
    tls_cert_file: Path
    tls_key_file: Path
    tls_ca_file: Path


def _write(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    try:
        atomic_write_bytes(path, data, mode=mode, overwrite=overwrite)
    except DurableWriteError as exc:
        raise EnrolmentError(str(exc)) from exc


def _load_tls_key(path: Path) -> NodeKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EnrolmentError(
            f"cannot load the node's TLS key {path}: {exc}; run `tensorguard agent enrol`"
        ) from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise EnrolmentError(f"{path} is not an Ed25519 or ECDSA key; remove it to re-enrol")
    return key


def _node_tls_key(node_dir: Path, key_type: KeyType) -> tuple[NodeKey, bool]:
    """The node's TLS key: loaded if present, else generated in ``node_dir`` (0600)."""
    path = node_dir / TLS_KEY_FILE
    if path.exists():
        return _load_tls_key(path), False
    key = generate_private_key(key_type)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write(path, pem, 0o600, overwrite=False)
    return key, True


def _node_xwing_key(path: Path) -> tuple[XWingPrivateKey, bool]:
    """The node's X-Wing key: the agent's existing one, else a new one in ``path``."""
    try:
        if path.exists():
            return load_recipient_private_key(path), False
        key = XWingPrivateKey.generate()
        write_key_file(path, key)
    except TensorGuardError as exc:
        raise EnrolmentError(f"cannot use the node's X-Wing key: {exc}") from exc
    return key, True


def _signed_csr(key: NodeKey, node_id: str, trust_domain: str, xwing_sha256: str) -> bytes:
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_id)]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(node_uri(trust_domain, node_id))]
            ),
            critical=False,
        )
        .add_attribute(XWING_KEY_ATTRIBUTE, xwing_sha256.encode("ascii"))
    )
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def enrol_node(
    node_dir: Path,
    outbox: Path,
    *,
    node_id: str,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    key_type: KeyType = KeyType.ED25519,
    xwing_key_file: Path | None = None,
) -> EnrolmentRequest:
    """Make the node's keys in ``node_dir`` and write its CSR and public keys to ``outbox``.

    An existing TLS key or X-Wing key (``xwing_key_file``, default
    ``node_dir/<node_id>.xwing.key``) is reused, so enrolling again asks for a new
    certificate for the same keys. ``outbox`` must not be inside ``node_dir``.
    """
    if NODE_ID_PATTERN.fullmatch(node_id) is None:
        raise EnrolmentError(
            f"node id {node_id!r} is invalid: use 1-64 characters a-z 0-9 . _ - starting "
            "with a letter or digit"
        )
    node_dir, outbox = node_dir.resolve(), outbox.resolve()
    if outbox == node_dir or node_dir in outbox.parents:
        raise EnrolmentError(
            f"the outbox {outbox} is inside the node directory {node_dir}; choose a directory "
            "outside it (only public files go to the outbox)"
        )
    try:
        ensure_directory(node_dir, mode=0o700)
        ensure_directory(outbox, mode=0o755)
        os.chmod(node_dir, 0o700)  # private keys live here: owner only
    except DurableWriteError as exc:
        raise EnrolmentError(str(exc)) from exc
    except OSError as exc:
        raise EnrolmentError(
            f"cannot make {node_dir} private (0700): {exc.strerror or exc}; run the enrolment "
            "as the directory's owner"
        ) from exc
    if (node_dir / IDENTITY_FILE).exists():
        enrolled_as, _ = _read_identity(node_dir)
        if enrolled_as != node_id:
            raise EnrolmentError(
                f"{node_dir} holds the keys of node {enrolled_as!r}, not {node_id!r}; use "
                "another node directory (a node's keys never change owner)"
            )
    tls_key, tls_generated = _node_tls_key(node_dir, key_type)
    xwing_path = xwing_key_file or node_dir / f"{node_id}.xwing.key"
    xwing_key, xwing_generated = _node_xwing_key(xwing_path)
    identity = {"node_id": node_id, "trust_domain": trust_domain}
    _write(node_dir / IDENTITY_FILE, json.dumps(identity).encode() + b"\n", 0o644, overwrite=True)
    csr_file = outbox / f"{node_id}.csr.pem"
    csr = _signed_csr(tls_key, node_id, trust_domain, xwing_key.public_key().fingerprint())
    _write(csr_file, csr, 0o644, overwrite=True)
    public_file = outbox / f"{node_id}.xwing.pub"
    public_file.unlink(missing_ok=True)
    try:
        write_key_file(public_file, xwing_key.public_key())
    except TensorGuardError as exc:
        raise EnrolmentError(f"cannot write the X-Wing public key: {exc}") from exc
    return EnrolmentRequest(
        node_id=node_id,
        csr_file=csr_file,
        xwing_public_key_file=public_file,
        xwing_key_file=xwing_path,
        tls_key_generated=tls_generated,
        xwing_key_generated=xwing_generated,
    )


def _read_identity(node_dir: Path) -> tuple[str, str]:
    path = node_dir / IDENTITY_FILE
    try:
        document = parse_json_object(path.read_bytes(), what=str(path))
    except (OSError, CodecError) as exc:
        raise EnrolmentError(
            f"cannot read {path} ({exc}); run `tensorguard agent enrol` first"
        ) from None
    node_id, trust_domain = document.get("node_id"), document.get("trust_domain")
    if not isinstance(node_id, str) or not isinstance(trust_domain, str):
        raise EnrolmentError(f"{path} is damaged; run `tensorguard agent enrol` again")
    return node_id, trust_domain


def _load_certificates(path: Path, what: str) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnrolmentError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_CHAIN_BYTES:
        raise EnrolmentError(f"the {what} {path} is larger than {MAX_CHAIN_BYTES} bytes")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise EnrolmentError(f"the {what} {path} is not PEM certificates: {exc}") from None
    return certificates


def install_certificate(
    node_dir: Path, chain_file: Path, ca_file: Path, *, now: datetime | None = None
) -> InstalledCertificate:
    """Check the chain the CA returned and install it with the root in ``node_dir``.

    The leaf must be for this node's TLS key, name this node (CN and URI SAN), carry
    EKU clientAuth and chain to the root in ``ca_file`` at ``now``; otherwise nothing
    is installed.
    """
    node_id, trust_domain = _read_identity(node_dir)
    chain = _load_certificates(chain_file, "certificate chain")
    roots = _load_certificates(ca_file, "CA root")
    leaf = chain[0]
    key_path = node_dir / TLS_KEY_FILE
    if leaf.public_key() != _load_tls_key(key_path).public_key():
        raise EnrolmentError(
            f"the certificate in {chain_file} is not for this node's TLS key ({key_path}); "
            "was it issued for another node's request?"
        )
    expected_uri = node_uri(trust_domain, node_id)
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    common_names = [a.value for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if uris != [expected_uri] or common_names != [node_id]:
        raise EnrolmentError(
            f"the certificate names {common_names}/{uris}, not this node ({node_id}, "
            f"{expected_uri})"
        )
    moment = now or datetime.now(UTC)
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(roots))
        .time(moment)
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, chain[1:])
    except verification.VerificationError as exc:
        raise EnrolmentError(
            f"the certificate in {chain_file} does not chain to the CA root in {ca_file} as "
            f"a client certificate at {moment:%Y-%m-%dT%H:%M:%SZ}: {exc}"
        ) from None
    pem = serialization.Encoding.PEM
    cert_file, root_file = node_dir / TLS_CERT_FILE, node_dir / CA_FILE
    _write(cert_file, b"".join(c.public_bytes(pem) for c in chain), 0o644, overwrite=True)
    _write(root_file, b"".join(c.public_bytes(pem) for c in roots), 0o644, overwrite=True)
    return InstalledCertificate(
        node_id=node_id,
        serial=leaf.serial_number,
        not_after=leaf.not_valid_after_utc,
        tls_cert_file=cert_file,
        tls_key_file=key_path,
        tls_ca_file=root_file,
    )
