"""Reading certificate signing requests: parse strictly, verify the proof of possession.

A CSR is accepted only when it parses as PEM (or DER) and its self-signature verifies
under the public key it carries, which proves the requester holds that private key.
The CA never sees the private key itself.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tensorguard.identity.errors import CertificateRequestError

MAX_CSR_BYTES = 64 * 1024
XWING_KEY_ATTRIBUTE = x509.ObjectIdentifier("2.25.242859197909141045024523119164624919997")
"""CSR attribute (a UUID OID, X.667) holding the hex SHA-256 of the node's X-Wing public
key: the node's TLS key signs it together with the request, binding the package key
that travels beside the CSR to the node that made the request."""


def parse_csr(
    data: bytes, *, source: str = "certificate request"
) -> x509.CertificateSigningRequest:
    """Parse ``data`` and verify its signature; raise :class:`CertificateRequestError` if not."""
    if len(data) > MAX_CSR_BYTES:
        raise CertificateRequestError(
            f"{source} is {len(data)} bytes, above the {MAX_CSR_BYTES}-byte limit for a CSR"
        )
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            csr = x509.load_pem_x509_csr(data)
        else:
            csr = x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CertificateRequestError(
            f"{source} is not a PKCS#10 certificate request ({exc}); send the file that "
            "`tensorguard agent enrol` wrote"
        ) from None
    try:
        valid = csr.is_signature_valid
        csr.public_key()
    except (ValueError, TypeError, x509.UnsupportedGeneralNameType) as exc:
        raise CertificateRequestError(f"{source} cannot be checked: {exc}") from None
    if not valid:
        raise CertificateRequestError(
            f"{source}'s signature does not verify under the public key it carries: it was "
            "altered or was not signed by the holder of that key; make a new request on the node"
        )
    return csr


def xwing_fingerprint(csr: x509.CertificateSigningRequest) -> str | None:
    """The X-Wing key fingerprint a node bound into ``csr``, or None when it bound none."""
    try:
        value = csr.attributes.get_attribute_for_oid(XWING_KEY_ATTRIBUTE).value
    except x509.AttributeNotFound:
        return None
    text = value.decode("ascii", errors="replace")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise CertificateRequestError(
            "the request's X-Wing key attribute is not a lower-case hex SHA-256"
        )
    return text


def read_csr(path: Path) -> x509.CertificateSigningRequest:
    """Read and check the CSR file ``path`` (see :func:`parse_csr`)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateRequestError(
            f"cannot read certificate request {path}: {exc.strerror or exc}"
        ) from exc
    return parse_csr(data, source=str(path))


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    """The PEM encoding of ``csr``."""
    return csr.public_bytes(serialization.Encoding.PEM)
