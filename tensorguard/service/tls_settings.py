"""TLS settings of ``tensorguard serve``: the service certificate and node certificates.

==========================  ===============================================================
variable                    meaning
==========================  ===============================================================
``TG_TLS_CERT_FILE``        the service's certificate chain (PEM, leaf first); with
                            ``TG_TLS_KEY_FILE`` the service listens with HTTPS only
``TG_TLS_KEY_FILE``         its private key (PEM)
``TG_TLS_CLIENT_CA_FILE``   the fleet CA's ``ca-bundle.pem``: client certificates are
                            verified against it in the handshake (optional there, so
                            health probes and operators connect without one)
``TG_TLS_CRL_FILE``         the fleet CA's ``crl.pem``; required with a client CA. Read
                            again whenever the file changes, checked on every node request
``TG_NODE_AUTH``            ``mtls``: node routes need a verified, unrevoked node
                            certificate naming the node *and* the node's signature
                            (default when a client CA is set); ``signature``: signed
                            requests alone (default in development without a client CA;
                            in production only when set explicitly, e.g. behind a proxy
                            that terminates TLS)
==========================  ===============================================================

Production refuses to start unless node routes use mutual TLS or ``TG_NODE_AUTH=signature``
is set on purpose (:func:`tls_problems`).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tensorguard.production import Environment

NODE_AUTH_VARIABLE = "TG_NODE_AUTH"
TLS_VARIABLES = {
    "cert_file": "TG_TLS_CERT_FILE",
    "key_file": "TG_TLS_KEY_FILE",
    "client_ca_file": "TG_TLS_CLIENT_CA_FILE",
    "crl_file": "TG_TLS_CRL_FILE",
}
MTLS_REMEDY = (
    "set TG_TLS_CERT_FILE and TG_TLS_KEY_FILE (the service certificate), "
    "TG_TLS_CLIENT_CA_FILE (the fleet CA's ca-bundle.pem) and TG_TLS_CRL_FILE (its crl.pem); "
    "see docs/IDENTITY.md, 'Mutual TLS with the fleet API'"
)


class NodeAuth(StrEnum):
    """How node routes authenticate an edge node."""

    MTLS = "mtls"
    SIGNATURE = "signature"


class TlsSettings(BaseModel):
    """Where the service's TLS files are and how node routes authenticate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    crl_file: Path | None = None
    node_auth: NodeAuth = NodeAuth.SIGNATURE

    @property
    def enabled(self) -> bool:
        """True when the service listens with HTTPS."""
        return self.cert_file is not None

    @property
    def verifies_clients(self) -> bool:
        """True when client certificates are requested and checked."""
        return self.client_ca_file is not None


def tls_settings_from_env(
    env: Mapping[str, str], environment: Environment
) -> tuple[TlsSettings, list[str]]:
    """The TLS settings in ``env`` and every problem with them (empty when usable).

    Problems: a certificate without its key (or the reverse), a client CA without a
    server certificate or without a CRL, ``TG_NODE_AUTH`` unknown or ``mtls`` without a
    client CA, and in production node routes without mutual TLS unless
    ``TG_NODE_AUTH=signature`` is set explicitly.
    """
    files = {
        field: Path(value) if (value := env.get(variable, "").strip()) else None
        for field, variable in TLS_VARIABLES.items()
    }
    problems: list[str] = []
    if (files["cert_file"] is None) != (files["key_file"] is None):
        problems.append(
            "set both TG_TLS_CERT_FILE and TG_TLS_KEY_FILE (the service certificate chain and "
            "its key), or neither"
        )
    if files["client_ca_file"] is not None:
        if files["cert_file"] is None:
            problems.append(
                "TG_TLS_CLIENT_CA_FILE needs TLS: set TG_TLS_CERT_FILE and TG_TLS_KEY_FILE"
            )
        if files["crl_file"] is None:
            problems.append(
                "TG_TLS_CLIENT_CA_FILE is set without TG_TLS_CRL_FILE: revoked node "
                "certificates would be accepted; set TG_TLS_CRL_FILE to the CA's crl.pem"
            )
    elif files["crl_file"] is not None:
        problems.append("TG_TLS_CRL_FILE is set without TG_TLS_CLIENT_CA_FILE; set both")
    raw = env.get(NODE_AUTH_VARIABLE, "").strip().lower()
    explicit = bool(raw)
    try:
        node_auth = NodeAuth(raw) if explicit else None
    except ValueError:
        problems.append(f"{NODE_AUTH_VARIABLE}={raw!r} is not one of mtls, signature")
        node_auth = None
    if node_auth is None:
        node_auth = NodeAuth.MTLS if files["client_ca_file"] is not None else NodeAuth.SIGNATURE
    if node_auth is NodeAuth.MTLS and files["client_ca_file"] is None and explicit:
        problems.append(f"{NODE_AUTH_VARIABLE}=mtls needs client certificates: {MTLS_REMEDY}")
    if environment is Environment.PRODUCTION and node_auth is NodeAuth.SIGNATURE and not explicit:
        problems.append(
            "node routes would accept edge nodes without a certificate from the fleet CA "
            f"(mutual TLS is not configured): {MTLS_REMEDY}; or, only behind a proxy that "
            f"terminates TLS, set {NODE_AUTH_VARIABLE}=signature to accept signed node "
            "requests alone"
        )
    return TlsSettings(node_auth=node_auth, **files), problems
