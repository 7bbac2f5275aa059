"""The fleet API routes: node enrolment, heartbeats, telemetry ingest and reads."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from tensorguard.service.auth import context, require_node, require_roles
from tensorguard.service.errors import AuthenticationError, InvalidRevocationError
from tensorguard.service.nodes import NodeView
from tensorguard.service.schemas import (
    EnrolmentRequest,
    ErrorBody,
    HeartbeatRequest,
    IngestBody,
    Name,
    RevocationBody,
    RevocationRequest,
    TelemetryRequest,
)
from tensorguard.service.telemetry import TelemetryReading, TelemetrySummary
from tensorguard.service.tokens import Principal, Role, verify_token

router = APIRouter(prefix="/v1")

OperatorOnly = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
Reader = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.AUDITOR))]
SignedNode = Annotated[Principal, Depends(require_node())]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: "the token to revoke is not a valid token of this service",
        401: "credentials missing, malformed, expired, replayed or not verifying",
        403: "authenticated but not allowed",
        404: "no such enrolled node or cohort",
        409: "the node is already enrolled",
        503: "no telemetry arrived in the window, or the database is unavailable",
    }
    return {code: {"model": ErrorBody, "description": reasons[code]} for code in codes}


@router.post(
    "/nodes",
    status_code=201,
    response_model=NodeView,
    responses=_errors(401, 403, 409, 503),
    summary="Enrol an edge node's request-signing key (operator)",
)
def enrol_node(request: Request, body: EnrolmentRequest, principal: OperatorOnly) -> NodeView:
    """Register the node (if new) with its Ed25519 public key and cohort."""
    return context(request).nodes.enrol(
        body.node_id,
        body.fleet,
        body.channel,
        body.cohort,
        body.public_key,
        actor=principal.actor,
    )


@router.get(
    "/nodes/{node_id}",
    response_model=NodeView,
    responses=_errors(401, 403, 404, 503),
    summary="An enrolled node and when it was last seen (operator, auditor)",
)
def get_node(request: Request, node_id: Name, principal: Reader) -> NodeView:
    """The node's enrolment, ``last_seen_at`` and installed version."""
    del principal  # authorisation only
    return context(request).nodes.get(node_id)


@router.post(
    "/nodes/{node_id}/heartbeat",
    response_model=NodeView,
    responses=_errors(401, 403, 503),
    summary="A node reports that it is alive (signed by the node)",
)
async def heartbeat(
    request: Request, node_id: Name, body: HeartbeatRequest, principal: SignedNode
) -> NodeView:
    """Update the node's ``last_seen_at`` (and installed version)."""
    del principal  # the dependency checked that the signer is node_id
    nodes = context(request).nodes
    return await run_in_threadpool(nodes.heartbeat, node_id, body.installed_version)


@router.post(
    "/nodes/{node_id}/telemetry",
    status_code=201,
    response_model=IngestBody,
    responses=_errors(401, 403, 503)
    | {200: {"model": IngestBody, "description": "a retry: already stored"}},
    summary="A node posts telemetry (signed by the node; idempotent per message_id)",
)
async def post_telemetry(
    request: Request,
    response: Response,
    node_id: Name,
    body: TelemetryRequest,
    principal: SignedNode,
) -> IngestBody:
    """Store the message once; a retried message id answers 200 and is not stored again."""
    del principal
    reading = TelemetryReading(**body.model_dump())
    store = context(request).telemetry
    stored = await run_in_threadpool(store.ingest, node_id, reading)
    if not stored:
        response.status_code = 200
    return IngestBody(message_id=body.message_id, stored=stored, duplicate=not stored)


@router.get(
    "/nodes/{node_id}/telemetry",
    response_model=TelemetrySummary,
    responses=_errors(401, 403, 404, 503),
    summary="The node's telemetry in the window; 503 when none arrived (operator, auditor)",
)
def node_telemetry(request: Request, node_id: Name, principal: Reader) -> TelemetrySummary:
    """Aggregates over the node's real telemetry; never a made-up value."""
    del principal
    return context(request).telemetry.node_summary(node_id)


@router.get(
    "/cohorts/{cohort}/telemetry",
    response_model=TelemetrySummary,
    responses=_errors(401, 403, 404, 503),
    summary="The cohort's telemetry in the window; 503 when none arrived (operator, auditor)",
)
def cohort_telemetry(request: Request, cohort: Name, principal: Reader) -> TelemetrySummary:
    """Aggregates over the cohort's real telemetry; never a made-up value."""
    del principal
    return context(request).telemetry.cohort_summary(cohort)


@router.post(
    "/tokens/revoke",
    response_model=RevocationBody,
    responses=_errors(400, 401, 403, 503),
    summary="Revoke a token before its expiry (operator)",
)
def revoke_token(
    request: Request, body: RevocationRequest, principal: OperatorOnly
) -> RevocationBody:
    """Record the token's ``jti`` as revoked; every later request with it gets 401."""
    service = context(request)
    try:
        revoked = verify_token(service.settings, body.token)
    except AuthenticationError as exc:
        raise InvalidRevocationError(f"the token to revoke is not valid: {exc}") from None
    if revoked.token_id is None or revoked.expires_at is None:
        raise InvalidRevocationError("the token to revoke has no jti or exp")
    service.revocations.revoke(revoked.token_id, revoked.expires_at, actor=principal.actor)
    return RevocationBody(jti=revoked.token_id, expires_at=revoked.expires_at, revoked=True)
