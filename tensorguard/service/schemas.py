"""Request bodies of the fleet service API (pydantic, strict) and its small responses.

Nodes and telemetry summaries are answered with the core's own dataclasses
(:class:`~tensorguard.service.nodes.NodeView`,
:class:`~tensorguard.service.telemetry.TelemetrySummary`), so each shape is written once.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from tensorguard.fleet.names import NAME_PATTERN

Name = Annotated[str, Field(pattern=NAME_PATTERN.pattern, max_length=64)]
MessageId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{8,64}$")]
PublicKeyHex = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
Version = Annotated[int, Field(ge=1, le=2**31 - 1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Why a request was refused (never contains credentials)."""

    detail: str


class HealthBody(BaseModel):
    """Liveness or readiness."""

    status: Literal["ok", "unavailable"]
    detail: str | None = None


class EnrolmentRequest(_Strict):
    """An operator enrols an edge node: its request-signing public key and cohort."""

    node_id: Name
    fleet: Name
    channel: Name
    cohort: Name
    public_key: PublicKeyHex = Field(description="raw Ed25519 public key, 64 hex characters")


class HeartbeatRequest(_Strict):
    """A node says it is alive, and what it runs."""

    installed_version: Version | None = None


class TelemetryRequest(_Strict):
    """One telemetry message from a node; ``message_id`` makes retries idempotent."""

    message_id: MessageId
    sent_at: AwareDatetime
    installed_version: Version | None = None
    install_outcome: Literal["installed", "rejected", "failed"] | None = None
    inference_latency_ms: Annotated[float, Field(ge=0, le=3_600_000)] | None = None
    error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    safety_events: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    cpu_percent: Annotated[float, Field(ge=0, le=100_000)] | None = None
    memory_mb: Annotated[float, Field(ge=0, le=1e9)] | None = None


class IngestBody(BaseModel):
    """Whether a telemetry message was stored now or had been stored before."""

    message_id: str
    stored: bool
    duplicate: bool


class RevocationRequest(_Strict):
    """A token to revoke before its expiry (it must verify: only this service's tokens)."""

    token: str = Field(min_length=1, max_length=4096)


class RevocationBody(BaseModel):
    """The revoked token's id and when it would have expired (unix seconds)."""

    jti: str
    expires_at: int
    revoked: bool


class _SignerEnrolment(_Strict):
    """A signer's name (its token's subject) and composite public key, to enrol."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.:@/-]{0,127}$")]
    public_key: str = Field(
        min_length=1,
        max_length=4096,
        description="base64 of the 1984-byte composite ML-DSA-65+Ed25519 public key",
    )


class EvaluatorEnrolmentRequest(_SignerEnrolment):
    """An operator trusts an evaluator's composite key (the evaluator token's subject)."""


class ConnectorRequest(_Strict):
    """A connector to create: kind, settings that may be shown, and sealed credentials."""

    name: Name
    kind: Name = Field(description="mqtt or webhook; any other kind reports unavailable")
    settings: dict[str, str | int | float | bool] = Field(default_factory=dict)
    credentials: str | None = Field(
        default=None,
        min_length=1,
        max_length=4096,
        description="MQTT password or webhook secret; stored sealed, never returned",
    )


class ConnectorHealthBody(BaseModel):
    """The outcome of a connector check."""

    name: str
    kind: str
    status: Literal["connected", "failed", "unavailable"]
    detail: str
    checked_at: AwareDatetime
    last_seen_at: AwareDatetime | None


class ApproverEnrolmentRequest(_SignerEnrolment):
    """An operator trusts a deployment approver's composite key (its token's subject)."""
