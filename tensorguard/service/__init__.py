"""The fleet service: ``tensorguard serve``, an authenticated HTTP API on the application DB.

Public names: :func:`create_app` (the FastAPI app), :class:`ServiceSettings` and
:func:`load_settings` (environment and production rules), :func:`issue_token` and
:class:`Role` (operator/evaluator/auditor tokens), :func:`sign_request` and
:class:`NodeClient` (what an edge node sends). Modules, one job each:

* ``settings`` — ``TG_*`` settings; production refuses a missing/short ``TG_SECRET_KEY``
  and ``TG_DEMO_MODE``;
* ``tokens`` — HS256 JWTs through PyJWT, algorithm pinned, every registered claim checked;
* ``request_signing`` / ``node_auth`` / ``nonces`` — Ed25519-signed node requests with a
  DB-backed replay window;
* ``nodes`` / ``telemetry`` — enrolment, heartbeats, idempotent telemetry ingest, windowed
  summaries (no telemetry: an error, never a made-up value);
* ``rate_limit`` / ``middleware`` — per-client token bucket (429) and body-size limit;
* ``revocations`` — tokens revoked before their expiry;
* ``client`` — the node side: signed heartbeats and telemetry with idempotent retries,
  over mutual TLS with the node's enrolled certificate;
* ``tls_settings`` / ``tls_server`` / ``node_certificates`` — HTTPS, node client
  certificates from the fleet CA (chain, CRL re-read when it changes, node id bound to
  the signer), production refusing node routes without mutual TLS;
* ``auth`` / ``routes`` / ``app`` — the FastAPI layer over the above.

``request_signing`` and ``client`` need only ``cryptography``; the rest needs the
``service`` extra.
See docs/FLEET.md ("Fleet service API").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tensorguard.lazy_exports import lazy_exports
from tensorguard.service.client import NodeClient
from tensorguard.service.request_signing import sign_request

if TYPE_CHECKING:
    from tensorguard.service.app import create_app
    from tensorguard.service.settings import ServiceSettings, load_settings
    from tensorguard.service.tokens import Role, issue_token

__all__ = [
    "NodeClient",
    "Role",
    "ServiceSettings",
    "create_app",
    "issue_token",
    "load_settings",
    "sign_request",
]

_LAZY = {
    "create_app": "tensorguard.service.app",
    "ServiceSettings": "tensorguard.service.settings",
    "load_settings": "tensorguard.service.settings",
    "Role": "tensorguard.service.tokens",
    "issue_token": "tensorguard.service.tokens",
}


# the FastAPI/PyJWT parts load only when they are asked for
__getattr__ = lazy_exports(__name__, _LAZY, globals())
