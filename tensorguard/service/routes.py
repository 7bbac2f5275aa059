"""The fleet API routes: node enrolment, heartbeats, telemetry, package downloads,
safety evaluations and integration connectors."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tensorguard.deployment_approval import SignedDeploymentApproval
from tensorguard.fleet.byte_ranges import (
    ByteRange,
    RangeNotSatisfiableError,
    entity_tag,
    plan_range,
)
from tensorguard.fleet.connectors import ConnectorStatus
from tensorguard.safety_evaluation import SignedSafetyEvaluation
from tensorguard.service.approvals import ApproverView, DeploymentApprovalView
from tensorguard.service.auth import context, require_enrolled_node, require_node, require_roles
from tensorguard.service.connectors import ConnectorView
from tensorguard.service.errors import AuthenticationError, InvalidRevocationError
from tensorguard.service.nodes import NodeView
from tensorguard.service.packages import read_range
from tensorguard.service.safety import EvaluatorView, SafetyEvaluationView
from tensorguard.service.schemas import (
    ApproverEnrolmentRequest,
    ConnectorHealthBody,
    ConnectorRequest,
    EnrolmentRequest,
    ErrorBody,
    EvaluatorEnrolmentRequest,
    HeartbeatRequest,
    IngestBody,
    Name,
    RevocationBody,
    RevocationRequest,
    TelemetryRequest,
    Version,
)
from tensorguard.service.telemetry import TelemetryReading, TelemetrySummary
from tensorguard.service.tokens import Principal, Role, verify_token

router = APIRouter(prefix="/v1")

OperatorOnly = Annotated[Principal, Depends(require_roles(Role.OPERATOR))]
Reader = Annotated[Principal, Depends(require_roles(Role.OPERATOR, Role.AUDITOR))]
SignedNode = Annotated[Principal, Depends(require_node())]
AnyEnrolledNode = Annotated[Principal, Depends(require_enrolled_node())]
PACKAGE_MEDIA_TYPE = "application/octet-stream"
PACKAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {PACKAGE_MEDIA_TYPE: {}}, "description": "the whole package"},
    206: {
        "content": {PACKAGE_MEDIA_TYPE: {}},
        "description": "the requested range of the package (see Content-Range)",
    },
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    reasons = {
        400: (
            "an invalid token to revoke, or a safety evaluation or deployment approval "
            "that does not verify"
        ),
        401: "credentials missing, malformed, expired, replayed or not verifying",
        403: "authenticated but not allowed",
        404: "no such enrolled node, cohort, release or deployment approval",
        409: (
            "the node, evaluator, approver or connector already exists, or the approval "
            "is for another release"
        ),
        422: "invalid names or connector settings",
        416: "the range starts past the end of the package (Content-Range: bytes */size)",
        503: (
            "no telemetry arrived in the window, a stored safety evaluation or deployment "
            "approval no longer verifies, or the database or registry is unavailable"
        ),
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


@router.get(
    "/packages/{channel}/{version}",
    response_class=Response,
    responses=PACKAGE_RESPONSES | _errors(401, 404, 416, 503),
    summary="Download a published package, resumable with Range (signed by an enrolled node)",
)
async def download_package(
    request: Request,
    channel: Name,
    version: Annotated[int, PathParam(ge=1, le=2**53)],
    principal: AnyEnrolledNode,
    range_header: Annotated[str | None, Header(alias="Range")] = None,
    if_range: Annotated[str | None, Header(alias="If-Range")] = None,
) -> Response:
    """Stream the package (200) or one range of it (206) while ``If-Range`` names its ETag.

    The ETag is the quoted SHA-256 of the package; the node checks that digest as it
    downloads, and the package signature decides what it installs.
    """
    del principal  # any enrolled node may download; packages are encrypted to recipients
    package = await run_in_threadpool(context(request).packages.find, channel, version)
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": entity_tag(package.digest),
        "Cache-Control": "no-store",
    }
    try:
        requested = plan_range(range_header, if_range, package.size, package.digest)
    except RangeNotSatisfiableError as exc:
        headers["Content-Range"] = f"bytes */{package.size}"
        return JSONResponse({"detail": str(exc)}, status_code=416, headers=headers)
    status = 200 if requested is None else 206
    byte_range = requested or ByteRange(0, package.size - 1, package.size)
    if requested is not None:
        headers["Content-Range"] = requested.content_range()
    headers["Content-Length"] = str(byte_range.length)
    return StreamingResponse(
        read_range(package.path, byte_range),
        status_code=status,
        headers=headers,
        media_type=PACKAGE_MEDIA_TYPE,
    )


EvaluatorOnly = Annotated[Principal, Depends(require_roles(Role.EVALUATOR))]
SafetyReader = Annotated[
    Principal, Depends(require_roles(Role.OPERATOR, Role.AUDITOR, Role.EVALUATOR))
]
ModelDigest = Annotated[str, PathParam(pattern=r"^[0-9a-f]{64}$")]


@router.post(
    "/evaluators",
    status_code=201,
    response_model=EvaluatorView,
    responses=_errors(400, 401, 403, 409, 503),
    summary="Trust a safety evaluator's composite public key (operator)",
)
def enrol_evaluator(
    request: Request, body: EvaluatorEnrolmentRequest, principal: OperatorOnly
) -> EvaluatorView:
    """Add the evaluator to the trust list; its token subject must be ``name``."""
    return context(request).safety.enrol_evaluator(
        body.name, body.public_key, actor=principal.actor
    )


@router.post(
    "/safety-evaluations",
    status_code=201,
    response_model=SafetyEvaluationView,
    responses=_errors(400, 401, 403, 503),
    summary="Submit a signed safety evaluation of a model (evaluator)",
)
def submit_safety_evaluation(
    request: Request, body: SignedSafetyEvaluation, principal: EvaluatorOnly
) -> SafetyEvaluationView:
    """Accepted only from an enrolled evaluator, naming itself, with a verifying signature."""
    return context(request).safety.submit(body, evaluator=principal.subject)


@router.get(
    "/safety-evaluations/{model_digest}",
    response_model=list[SafetyEvaluationView],
    responses=_errors(401, 403, 503),
    summary="The model's safety evaluations, each verified on this read",
)
def model_safety_evaluations(
    request: Request, model_digest: ModelDigest, principal: SafetyReader
) -> list[SafetyEvaluationView]:
    """Every stored evaluation of the model; 503 when a stored one no longer verifies."""
    del principal
    return context(request).safety.for_model(model_digest)


@router.post(
    "/connectors",
    status_code=201,
    response_model=ConnectorView,
    responses=_errors(401, 403, 409, 422, 503),
    summary="Create an integration connector; credentials are sealed (operator)",
)
def create_connector(
    request: Request, body: ConnectorRequest, principal: OperatorOnly
) -> ConnectorView:
    """Store the connector after validating a real kind's settings and credentials."""
    return context(request).connectors.create(
        body.name, body.kind, body.settings, body.credentials, actor=principal.actor
    )


@router.get(
    "/connectors",
    response_model=list[ConnectorView],
    responses=_errors(401, 403, 503),
    summary="Every connector with its last check; never credentials (operator)",
)
def list_connectors(request: Request, principal: OperatorOnly) -> list[ConnectorView]:
    """The connectors, by name."""
    del principal
    return context(request).connectors.list()


@router.post(
    "/connectors/{name}/check",
    response_model=ConnectorHealthBody,
    responses=_errors(401, 403, 404, 503)
    | {
        424: {"model": ConnectorHealthBody, "description": "kind not implemented: unavailable"},
        503: {"model": ConnectorHealthBody, "description": "the check failed, with the reason"},
    },
    summary="Run the connector's health check now and record last_seen (operator)",
)
async def check_connector(request: Request, name: Name, principal: OperatorOnly) -> JSONResponse:
    """200 connected; 424 for a kind without an implementation; 503 when the check failed."""
    store = context(request).connectors
    view, health = await run_in_threadpool(store.check, name, actor=principal.actor)
    body = ConnectorHealthBody(
        name=view.name,
        kind=view.kind,
        status=health.status.value,
        detail=health.detail,
        checked_at=health.checked_at,
        last_seen_at=view.last_seen_at,
    )
    status = {
        ConnectorStatus.CONNECTED: 200,
        ConnectorStatus.UNAVAILABLE: 424,
        ConnectorStatus.FAILED: 503,
    }[health.status]
    return JSONResponse(body.model_dump(mode="json"), status_code=status)


@router.post(
    "/approvers",
    status_code=201,
    response_model=ApproverView,
    responses=_errors(400, 401, 403, 409, 503),
    summary="Trust a deployment approver's composite public key (operator)",
)
def enrol_approver(
    request: Request, body: ApproverEnrolmentRequest, principal: OperatorOnly
) -> ApproverView:
    """Add the approver to the trust list; its operator token's subject must be ``name``."""
    return context(request).approvals.enrol_approver(
        body.name, body.public_key, actor=principal.actor
    )


@router.post(
    "/deployments",
    status_code=201,
    response_model=DeploymentApprovalView,
    responses=_errors(400, 401, 403, 404, 409, 503),
    summary="Record a signed approval to deploy a release to its channel (operator)",
)
def approve_deployment(
    request: Request, body: SignedDeploymentApproval, principal: OperatorOnly
) -> DeploymentApprovalView:
    """Accepted only from an enrolled approver naming itself, signed, for a recorded
    release with the same package digest."""
    return context(request).approvals.submit(body, approver=principal.subject)


@router.get(
    "/deployments/{fleet}/{channel}/{version}",
    response_model=list[DeploymentApprovalView],
    responses=_errors(401, 403, 404, 503),
    summary="The release's deployment approvals, each verified on this read",
)
def deployment_approvals(
    request: Request, fleet: Name, channel: Name, version: Version, principal: Reader
) -> list[DeploymentApprovalView]:
    """Every approval of the release; 503 when a stored one no longer verifies."""
    del principal
    return context(request).approvals.for_release(fleet, channel, version)
