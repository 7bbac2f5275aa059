"""HTTPS for ``tensorguard serve``: the server's TLS context and the client certificate.

* :class:`ServerTls` builds the ``ssl.SSLContext`` uvicorn serves with: TLS 1.2 or newer,
  the service certificate chain and key, and — with a client CA — client certificates
  requested and verified against the fleet CA bundle in the handshake
  (``CERT_OPTIONAL``: a certificate that is sent must verify, or the handshake fails;
  health probes and operators with tokens connect without one, and node routes refuse a
  request without one). :meth:`ServerTls.reload` loads a renewed certificate and key into
  the same context (``tensorguard serve`` calls it on SIGHUP): new connections get the
  new certificate, and a chain that does not load leaves the old one in place.
* :class:`PeerCertificateProtocol` is uvicorn's h11 protocol that hands the verified
  client certificate of the connection to the application, as ``client_cert_chain``
  (PEM, leaf only) of the ASGI ``tls`` scope extension. uvicorn itself does not pass it
  on; :func:`tensorguard.service.node_certificates.peer_certificate` reads it back. A
  client cannot set it: it is taken from the TLS connection, never from headers.

The CRL is not loaded into the handshake (OpenSSL would need a new context to see a new
CRL); :mod:`tensorguard.service.node_certificates` checks it on every node request.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any, cast

from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.protocols.http.h11_impl import H11Protocol

from tensorguard.service.errors import ServiceConfigError
from tensorguard.service.node_certificates import TLS_EXTENSION
from tensorguard.service.tls_settings import TlsSettings

LOG = logging.getLogger(__name__)


class ServerTls:
    """The server's ``SSLContext`` and the files it was loaded from."""

    def __init__(self, settings: TlsSettings) -> None:
        """Build the context; :class:`ServiceConfigError` if a file does not load."""
        if settings.cert_file is None or settings.key_file is None:
            raise ServiceConfigError("TLS needs TG_TLS_CERT_FILE and TG_TLS_KEY_FILE")
        self.settings = settings
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            self.context.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ServiceConfigError(
                f"the service certificate {settings.cert_file} and key {settings.key_file} do "
                f"not load ({exc}); they must be PEM, the chain leaf first, and belong together"
            ) from None
        if settings.client_ca_file is not None:
            try:
                self.context.load_verify_locations(cafile=settings.client_ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ServiceConfigError(
                    f"TG_TLS_CLIENT_CA_FILE {settings.client_ca_file} does not load ({exc}); "
                    "point it at the fleet CA's ca-bundle.pem"
                ) from None
            self.context.verify_mode = ssl.CERT_OPTIONAL

    def reload(self) -> bool:
        """Load the certificate and key files again; True if the new pair is now served.

        The pair is first loaded into a scratch context, so a half-written or mismatched
        pair never replaces the one being served (it is logged and False returned).
        """
        cert_file, key_file = self.settings.cert_file, self.settings.key_file
        if cert_file is None or key_file is None:  # checked in __init__
            return False
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert_file, key_file)
            self.context.load_cert_chain(cert_file, key_file)
        except (OSError, ssl.SSLError) as exc:
            LOG.error(
                "TLS reload refused: %s and %s do not load (%s); still serving the previous "
                "certificate",
                cert_file,
                key_file,
                exc,
            )
            return False
        LOG.info("TLS reload: new connections get the certificate in %s", cert_file)
        return True


def _with_client_certificate(app: ASGI3Application, pem: str) -> ASGI3Application:
    """``app`` with the connection's client certificate in each request's scope."""

    async def call(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        mutable = cast(dict[str, Any], scope)
        extensions: dict[str, Any] = mutable.setdefault("extensions", {})
        extensions[TLS_EXTENSION] = {"client_cert_chain": [pem], "client_cert_error": None}
        await app(scope, receive, send)

    return call


class PeerCertificateProtocol(H11Protocol):
    """uvicorn's h11 protocol, passing a verified client certificate to the application."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Set up the connection; wrap the app with the peer certificate, if one was sent."""
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        der = ssl_object.getpeercert(binary_form=True)
        if der:
            self.app = _with_client_certificate(self.app, ssl.DER_cert_to_PEM_cert(der))
