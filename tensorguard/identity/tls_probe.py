"""Which certificate does a TLS service serve right now? Its SHA-256 fingerprint.

Renewal verification compares the served leaf with the one just deployed, byte for byte
(the fingerprint pins the exact certificate, which a chain check alone would not: the
old certificate chains just as well). The probe therefore does not validate the chain;
it sends ``server_name`` (SNI) so a service with several certificates picks the right one.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import time

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tensorguard.identity.errors import IdentityError


class VerificationError(IdentityError):
    """The service does not serve the expected certificate (or cannot be reached)."""


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, lowercase hex."""
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


def served_fingerprint(host: str, port: int, server_name: str, timeout_s: float = 5.0) -> str:
    """Connect to ``host:port`` over TLS and return the served leaf's SHA-256."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the fingerprint comparison is the check
    try:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        raise VerificationError(
            f"cannot complete a TLS handshake with {host}:{port}: {exc}"
        ) from exc
    if not der:
        raise VerificationError(f"{host}:{port} presented no certificate")
    return hashlib.sha256(der).hexdigest()


def wait_until_served(
    host: str, port: int, server_name: str, expected_sha256: str, timeout_s: float
) -> None:
    """Poll until ``host:port`` serves the certificate ``expected_sha256``.

    A reload is asynchronous (Mosquitto re-reads its files after SIGHUP), so the probe
    retries until ``timeout_s``; raises :class:`VerificationError` naming what is served.
    """
    deadline = time.monotonic() + timeout_s
    served = "nothing"
    while True:
        try:
            served = served_fingerprint(host, port, server_name)
        except VerificationError as exc:
            served = f"nothing ({exc})"
        if served == expected_sha256:
            return
        if time.monotonic() >= deadline:
            raise VerificationError(
                f"{host}:{port} ({server_name}) serves {served[:16]}…, not the expected "
                f"certificate {expected_sha256[:16]}… after {timeout_s:g}s"
            )
        time.sleep(0.2)
