"""The fleet service application: :func:`create_app` builds the FastAPI app.

Only ``/healthz`` and ``/readyz`` answer without credentials; every other route
depends on :mod:`tensorguard.service.auth`. Domain errors become JSON ``{"detail": ...}``
responses here, in one place: authentication 401 (with ``WWW-Authenticate``; also a
missing, invalid or revoked node certificate),
authorisation 403 (also an untrusted safety evaluator), an invalid token to revoke or
a bad safety-evaluation signature 400, unknown node, release or connector 404,
repeated enrolment 409, invalid names or connector settings 422, no telemetry, a stored
safety evaluation that no longer verifies, database and registry failures and a node
certificate whose revocation cannot be checked (no current CRL) 503. Unexpected
errors are logged and answered 500 without details. Invalid bodies are 422 naming the
fields, never echoing the submitted values.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tensorguard.deployment_approval import (
    ApprovalMismatchError,
    DeploymentApprovalError,
    UntrustedApproverError,
)
from tensorguard.errors import TensorGuardError
from tensorguard.fleet.connectors import ConnectorError
from tensorguard.fleet.errors import FleetDatabaseError, FleetNameError, RegistryError
from tensorguard.safety_evaluation import (
    SafetyEvaluationError,
    SafetySignatureError,
    UntrustedEvaluatorError,
)
from tensorguard.service.context import ServiceContext
from tensorguard.service.errors import (
    ApprovalIntegrityError,
    ApproverAlreadyEnrolledError,
    AuthenticationError,
    ConnectorExistsError,
    EvaluatorAlreadyEnrolledError,
    InvalidRevocationError,
    MissingApprovalError,
    NodeAlreadyEnrolledError,
    NoTelemetryError,
    PermissionDeniedError,
    RevocationCheckError,
    SafetyRecordIntegrityError,
    UnknownConnectorError,
    UnknownNodeError,
    UnknownPackageError,
)
from tensorguard.service.middleware import GuardMiddleware
from tensorguard.service.routes import router
from tensorguard.service.schemas import ErrorBody, HealthBody
from tensorguard.service.settings import ServiceSettings

LOG = logging.getLogger(__name__)
API_VERSION = "1"

# (error type, HTTP status); first match wins, narrow types first.
ERROR_STATUS: tuple[tuple[type[TensorGuardError], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (UntrustedEvaluatorError, 403),
    (SafetySignatureError, 400),
    (UntrustedApproverError, 403),
    (ApprovalMismatchError, 409),
    (DeploymentApprovalError, 400),
    (ApproverAlreadyEnrolledError, 409),
    (ApprovalIntegrityError, 503),
    (MissingApprovalError, 404),
    (SafetyEvaluationError, 400),
    (UnknownNodeError, 404),
    (UnknownPackageError, 404),
    (UnknownConnectorError, 404),
    (NodeAlreadyEnrolledError, 409),
    (EvaluatorAlreadyEnrolledError, 409),
    (ConnectorExistsError, 409),
    (ConnectorError, 422),
    (SafetyRecordIntegrityError, 503),
    (FleetNameError, 422),
    (InvalidRevocationError, 400),
    (NoTelemetryError, 503),
    (FleetDatabaseError, 503),
    (RegistryError, 503),
    (RevocationCheckError, 503),
)


def status_for(error: TensorGuardError) -> int:
    """The HTTP status of a domain error (500 for an unlisted one)."""
    for error_type, status in ERROR_STATUS:
        if isinstance(error, error_type):
            return status
    return 500


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, TensorGuardError)
    status = status_for(exc)
    detail = str(exc)
    headers: dict[str, str] = {}
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    if status == 503:
        headers["Retry-After"] = "30"
    if isinstance(exc, FleetDatabaseError):
        LOG.error("%s %s: %s", request.method, request.url.path, exc)
        detail = "the application database is unavailable; retry later"
    elif isinstance(exc, RegistryError):
        LOG.error("%s %s: %s", request.method, request.url.path, exc)
        detail = "the release registry is unavailable or damaged; retry later"
    elif isinstance(exc, RevocationCheckError):
        LOG.error("%s %s: %s", request.method, request.url.path, exc)
        detail = "the revocation status of the client certificate cannot be checked; retry later"
    elif status == 500:
        LOG.error("%s %s: %s", request.method, request.url.path, exc)
        detail = "internal error"
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each invalid field, without echoing the submitted values back."""
    del request
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(error.get("loc", ())), "msg": error.get("msg", ""), "type": error["type"]}
        for error in exc.errors()
    ]
    return JSONResponse({"detail": errors}, status_code=422)


def create_app(settings: ServiceSettings) -> FastAPI:
    """The fleet service for ``settings`` (the database is opened, not yet connected)."""
    service = ServiceContext.create(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        service.database.close()

    app = FastAPI(
        lifespan=lifespan,
        docs_url=None,  # the interactive pages load scripts from a CDN; /openapi.json stays
        redoc_url=None,
        title="TensorGuard fleet service",
        version=API_VERSION,
        description=(
            "Edge-node enrolment, heartbeats, telemetry and package downloads. See docs/FLEET.md."
        ),
        responses={
            429: {"model": ErrorBody, "description": "rate limit exceeded; see Retry-After"},
            413: {"model": ErrorBody, "description": "request body too large"},
            411: {"model": ErrorBody, "description": "Content-Length required"},
        },
    )
    app.state.context = service
    app.add_exception_handler(TensorGuardError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_middleware(
        GuardMiddleware, limiter=service.limiter, max_body_bytes=settings.max_body_bytes
    )
    app.include_router(router)

    @app.get("/healthz", response_model=HealthBody, tags=["health"])
    def healthz() -> HealthBody:
        """Liveness: the process answers."""
        return HealthBody(status="ok")

    @app.get(
        "/readyz",
        response_model=HealthBody,
        responses={503: {"model": HealthBody, "description": "not ready, with the reason"}},
        tags=["health"],
    )
    async def readyz() -> JSONResponse:
        """Readiness: the database answers and its schema is at the shipped head revision."""
        try:
            await run_in_threadpool(service.database.require_current_schema)
        except FleetDatabaseError as exc:
            LOG.warning("not ready: %s", exc)
            body = HealthBody(status="unavailable", detail="database unreachable or not migrated")
            return JSONResponse(body.model_dump(), status_code=503)
        return JSONResponse(HealthBody(status="ok").model_dump())

    return app
