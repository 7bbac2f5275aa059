"""FastAPI dependencies that authenticate and authorise every non-health route.

* :func:`require_roles` — a bearer JWT (:mod:`tensorguard.service.tokens`), not revoked
  (:mod:`tensorguard.service.revocations`), whose role is one of the given roles; 401
  without a valid token, 403 with the wrong role.
* :func:`require_node` — a request signed by the edge node named in the path
  (:mod:`tensorguard.service.node_auth`); 401 unless the signature, time and nonce
  check out, 403 when a node acts for another node id.
* :func:`require_enrolled_node` — a request signed by any enrolled node (401 otherwise).

With client certificates configured (``TG_TLS_CLIENT_CA_FILE``), both node dependencies
first check the connection's client certificate
(:mod:`tensorguard.service.node_certificates`): it must verify, be unrevoked and name the
node that signs the request (``X-TG-Node``), else 401 (bad or missing certificate), 403
(another node's certificate) or 503 (revocation undecidable). Under
``TG_NODE_AUTH=mtls`` a request without a certificate is refused (401); under
``signature`` a certificate that is sent is still checked and bound.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from tensorguard.service.context import ServiceContext
from tensorguard.service.errors import AuthenticationError, PermissionDeniedError
from tensorguard.service.node_auth import NodeCredentials
from tensorguard.service.node_certificates import peer_certificate
from tensorguard.service.request_signing import (
    NODE_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)
from tensorguard.service.schemas import Name
from tensorguard.service.tls_settings import NodeAuth
from tensorguard.service.tokens import Principal, Role, verify_token

NODE_SIGNATURE_HEADERS = ", ".join((NODE_HEADER, TIMESTAMP_HEADER, NONCE_HEADER, SIGNATURE_HEADER))
BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="OperatorToken",
    description="short-lived HS256 JWT (roles operator, evaluator, auditor)",
)


def context(request: Request) -> ServiceContext:
    """The service context the app was created with."""
    service: ServiceContext = request.app.state.context
    return service


def require_roles(*roles: Role) -> Callable[..., Principal]:
    """A dependency that admits a valid bearer token holding one of ``roles``."""
    allowed = frozenset(roles)

    def dependency(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    ) -> Principal:
        if credentials is None:
            raise AuthenticationError("a bearer token is required (Authorization: Bearer ...)")
        service = context(request)
        principal = verify_token(service.settings, credentials.credentials)
        if principal.token_id is None or service.revocations.is_revoked(principal.token_id):
            raise AuthenticationError("token revoked; request a new one")
        if principal.role not in allowed:
            raise PermissionDeniedError(
                f"role {principal.role.value!r} may not do this; it needs "
                f"{' or '.join(sorted(r.value for r in allowed))}"
            )
        return principal

    return dependency


def _signed_path(request: Request) -> str:
    raw = request.scope.get("raw_path") or request.url.path.encode()
    query = request.scope.get("query_string", b"")
    path = bytes(raw).decode("latin-1")
    return f"{path}?{bytes(query).decode('latin-1')}" if query else path


async def _certified_node(request: Request) -> str | None:
    """The node id the connection's client certificate proves, or None without one."""
    service = context(request)
    verifier = service.node_certificates
    der = peer_certificate(request.scope) if verifier is not None else None
    if verifier is None or der is None:
        if service.settings.tls.node_auth is NodeAuth.MTLS:
            raise AuthenticationError(
                "node routes need a client certificate from the fleet CA (mutual TLS): "
                "connect over https with the node's enrolled tls.crt and tls.key "
                "(agent.yaml: service_tls_cert_file, service_tls_key_file)"
            )
        return None
    return await run_in_threadpool(verifier.node_id, der)


async def _signed_node(
    request: Request,
    node: str | None,
    timestamp: str | None,
    nonce: str | None,
    signature: str | None,
) -> Principal:
    certified = await _certified_node(request)
    if node is None or timestamp is None or nonce is None or signature is None:
        raise AuthenticationError(f"a signed request needs {NODE_SIGNATURE_HEADERS}")
    if certified is not None and node != certified:
        raise PermissionDeniedError(
            f"the client certificate is node {certified!r}'s; it may not act for node {node!r}"
        )
    body = await request.body()
    credentials = NodeCredentials(node, timestamp, nonce, signature)
    authenticator = context(request).node_authenticator
    return await run_in_threadpool(
        authenticator.authenticate, request.method, _signed_path(request), body, credentials
    )


NodeHeader = Annotated[str | None, Header(alias=NODE_HEADER)]
TimestampHeader = Annotated[str | None, Header(alias=TIMESTAMP_HEADER)]
NonceHeader = Annotated[str | None, Header(alias=NONCE_HEADER)]
SignatureHeader = Annotated[str | None, Header(alias=SIGNATURE_HEADER)]


def require_node() -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits only a request signed by the node in the ``node_id`` path."""

    async def dependency(
        request: Request,
        node_id: Annotated[Name, Path(description="the edge node's id")],
        x_tg_node: NodeHeader = None,
        x_tg_timestamp: TimestampHeader = None,
        x_tg_nonce: NonceHeader = None,
        x_tg_signature: SignatureHeader = None,
    ) -> Principal:
        principal = await _signed_node(
            request, x_tg_node, x_tg_timestamp, x_tg_nonce, x_tg_signature
        )
        if principal.subject != node_id:
            raise PermissionDeniedError(
                f"node {principal.subject!r} may not act for node {node_id!r}"
            )
        return principal

    return dependency


def require_enrolled_node() -> Callable[..., Awaitable[Principal]]:
    """A dependency that admits a request signed by any enrolled node (package downloads)."""

    async def dependency(
        request: Request,
        x_tg_node: NodeHeader = None,
        x_tg_timestamp: TimestampHeader = None,
        x_tg_nonce: NonceHeader = None,
        x_tg_signature: SignatureHeader = None,
    ) -> Principal:
        return await _signed_node(request, x_tg_node, x_tg_timestamp, x_tg_nonce, x_tg_signature)

    return dependency


__all__ = [
    "BEARER",
    "AuthenticationError",
    "require_enrolled_node",
    "require_node",
    "require_roles",
]
