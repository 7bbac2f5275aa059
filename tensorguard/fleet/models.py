"""Tables of the fleet application database (SQLAlchemy 2.0 typed declarative models).

* ``edge_nodes``: devices that receive releases, with the channel they follow and the
  fingerprint of their package-recipient public key;
* ``releases``: every package published to a fleet channel;
* ``install_reports``: what each node reported after handling a release;
* ``audit_log``: an append-only record of who did what to which subject;
* ``node_credentials``, ``request_nonces``, ``telemetry_samples``, ``revoked_tokens``: the
  fleet service's enrolled node keys and cohorts, used signed-request nonces, posted
  telemetry, and tokens revoked before their expiry;
* ``evaluators``, ``safety_evaluations``: operator-enrolled evaluator keys and the signed
  safety evaluations they submitted (stored with the signature, verified on every read);
* ``connectors``: integration connectors, their credentials sealed, and ``last_seen``;
* ``announcement_outbox``: release announcements waiting for (or already given to) the
  MQTT broker, so a release made while the broker is down is announced when it is back.
* ``approvers``, ``deployment_approvals``: operator-enrolled approver keys and their
  signed approvals of releases (verified on every read and before a deployment);
* ``rollouts``: canary rollouts of releases and how each ended (promoted, rolled back).

The schema is created and evolved only by the Alembic migrations in
``tensorguard/fleet/migrations`` (see :func:`tensorguard.fleet.db.migrate`); a test
checks that these models and the migrations describe the same schema.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ColumnElement,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    and_,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

MIGRATION_VERSION_TABLE = "fleet_alembic_version"
NAME_LENGTH = 64
DIGEST_LENGTH = 64

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC timestamp on every backend (SQLite stores it naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes; store UTC."""
        del dialect  # the same for every backend
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; pass an aware datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return aware UTC datetimes whatever the backend gave back."""
        del dialect
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base with a constraint naming convention (stable migration names)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class EdgeNode(Base):
    """A device in a fleet that follows one release channel."""

    __tablename__ = "edge_nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    fleet: Mapped[str] = mapped_column(String(NAME_LENGTH))
    channel: Mapped[str] = mapped_column(String(NAME_LENGTH))
    recipient_fingerprint: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    installed_version: Mapped[int | None] = mapped_column(Integer)

    reports: Mapped[list[InstallReportRow]] = relationship(back_populates="node")


class ReleaseRow(Base):
    """A package published on a fleet channel."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("fleet", "channel", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fleet: Mapped[str] = mapped_column(String(NAME_LENGTH))
    channel: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    size: Mapped[int] = mapped_column(BigInteger)
    location: Mapped[str] = mapped_column(Text)
    gate_decision_digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime())

    reports: Mapped[list[InstallReportRow]] = relationship(back_populates="release")


class InstallReportRow(Base):
    """One node's report about one release: installed, rejected (and why) or failed."""

    __tablename__ = "install_reports"
    __table_args__ = (
        Index("ix_install_reports_node_received", "node_pk", "received_at"),
        Index("uq_install_reports_node_digest", "node_pk", "report_digest", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_pk: Mapped[int] = mapped_column(ForeignKey("edge_nodes.id", ondelete="CASCADE"))
    release_id: Mapped[int | None] = mapped_column(ForeignKey("releases.id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(16))
    reason_code: Mapped[str] = mapped_column(String(NAME_LENGTH))
    reason: Mapped[str] = mapped_column(Text)
    reported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    # SHA-256 of the report's canonical JSON: the same (retained, re-delivered) report is
    # stored once per node. NULL for reports stored before revision 0004.
    report_digest: Mapped[str | None] = mapped_column(String(DIGEST_LENGTH))

    node: Mapped[EdgeNode] = relationship(back_populates="reports")
    release: Mapped[ReleaseRow | None] = relationship(back_populates="reports")


class AuditEvent(Base):
    """An append-only audit record."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, index=True)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(NAME_LENGTH))
    subject: Mapped[str] = mapped_column(String(256))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def record_audit(
    session: Session, actor: str, action: str, subject: str, details: dict[str, Any]
) -> None:
    """Add one audit-log entry to ``session``: it is written with the session's changes."""
    session.add(AuditEvent(actor=actor, action=action, subject=subject, details=details))


class NodeCredential(Base):
    """The request-signing public key an edge node enrolled with, and its cohort."""

    __tablename__ = "node_credentials"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_pk: Mapped[int] = mapped_column(
        ForeignKey("edge_nodes.id", ondelete="CASCADE"), unique=True
    )
    algorithm: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(String(128))
    cohort: Mapped[str] = mapped_column(String(NAME_LENGTH), index=True)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)

    node: Mapped[EdgeNode] = relationship()


class RequestNonce(Base):
    """A signed-request nonce already used by a node (replay protection)."""

    __tablename__ = "request_nonces"
    __table_args__ = (UniqueConstraint("node_pk", "nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_pk: Mapped[int] = mapped_column(ForeignKey("edge_nodes.id", ondelete="CASCADE"))
    nonce: Mapped[str] = mapped_column(String(NAME_LENGTH))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, index=True)


class TelemetrySample(Base):
    """One telemetry message posted by an edge node (unique per node and message id)."""

    __tablename__ = "telemetry_samples"
    __table_args__ = (
        UniqueConstraint("node_pk", "message_id"),
        Index("ix_telemetry_samples_node_received", "node_pk", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_pk: Mapped[int] = mapped_column(ForeignKey("edge_nodes.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(NAME_LENGTH))
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime())
    received_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now, index=True)
    installed_version: Mapped[int | None] = mapped_column(Integer)
    install_outcome: Mapped[str | None] = mapped_column(String(16))
    inference_latency_ms: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float | None] = mapped_column(Float)
    safety_events: Mapped[int] = mapped_column(Integer, default=0)
    cpu_percent: Mapped[float | None] = mapped_column(Float)
    memory_mb: Mapped[float | None] = mapped_column(Float)

    node: Mapped[EdgeNode] = relationship()


class RevokedToken(Base):
    """An operator/evaluator/auditor token revoked before its expiry (by its ``jti``)."""

    __tablename__ = "revoked_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    jti: Mapped[str] = mapped_column(String(128), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    revoked_by: Mapped[str] = mapped_column(String(128))


class EnrolledKeyColumns:
    """The columns of a trust list of composite public keys enrolled by operators.

    A mixin: each trust list (evaluators, approvers) is its own table with these columns.
    """

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    fingerprint: Mapped[str] = mapped_column(String(DIGEST_LENGTH), unique=True)
    public_key: Mapped[str] = mapped_column(Text)
    enrolled_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    enrolled_by: Mapped[str] = mapped_column(String(128))


class EvaluatorKey(EnrolledKeyColumns, Base):
    """A safety evaluator's composite public key, trusted once an operator enrolled it."""

    __tablename__ = "evaluators"


class SafetyEvaluationRow(Base):
    """A signed safety evaluation, stored exactly as signed (document and signature)."""

    __tablename__ = "safety_evaluations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH), index=True)
    evaluator_pk: Mapped[int] = mapped_column(ForeignKey("evaluators.id", ondelete="RESTRICT"))
    document: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    submitted_by: Mapped[str] = mapped_column(String(128))


class ConnectorRow(Base):
    """An integration connector: kind, public settings, sealed credentials, health."""

    __tablename__ = "connectors"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH), unique=True)
    kind: Mapped[str] = mapped_column(String(NAME_LENGTH))
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sealed_credentials: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    created_by: Mapped[str] = mapped_column(String(128))
    last_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_detail: Mapped[str | None] = mapped_column(Text)
    healthy: Mapped[bool] = mapped_column(Boolean, default=False)


class AnnouncementOutboxRow(Base):
    """A release announcement queued for the broker (one per fleet, channel and version).

    ``state`` is ``pending`` until the broker acknowledged it (``delivered``) or a newer
    version of the same channel was delivered first (``superseded``: announcing an older
    release on the retained topic would hide the newer one). ``attempts`` and
    ``last_error`` say why a pending announcement is still waiting.
    """

    __tablename__ = "announcement_outbox"
    __table_args__ = (UniqueConstraint("fleet", "channel", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fleet: Mapped[str] = mapped_column(String(NAME_LENGTH))
    channel: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    payload: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), index=True)
    queued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ApproverKey(EnrolledKeyColumns, Base):
    """A deployment approver's composite public key, trusted once an operator enrolled it."""

    __tablename__ = "approvers"


class DeploymentApprovalRow(Base):
    """A signed deployment approval of one release, stored exactly as signed."""

    __tablename__ = "deployment_approvals"
    __table_args__ = (UniqueConstraint("fleet", "channel", "version", "approver_pk"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fleet: Mapped[str] = mapped_column(String(NAME_LENGTH))
    channel: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    release_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    approver_pk: Mapped[int] = mapped_column(ForeignKey("approvers.id", ondelete="RESTRICT"))
    document: Mapped[str] = mapped_column(Text)
    signature: Mapped[str] = mapped_column(Text)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    submitted_by: Mapped[str] = mapped_column(String(128))


class RolloutRow(Base):
    """A telemetry-gated canary rollout of one release (tensorguard.fleet.rollout).

    ``status`` is ``canary`` while the cohort (``canary_nodes``) runs it, then
    ``promoted`` (announced to the whole channel) or ``rolled_back`` (revoked; the canary
    nodes reinstall ``previous_version``), with the decision's ``reasons``.
    """

    __tablename__ = "rollouts"
    __table_args__ = (UniqueConstraint("fleet", "channel", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fleet: Mapped[str] = mapped_column(String(NAME_LENGTH))
    channel: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)
    digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    previous_version: Mapped[int | None] = mapped_column(Integer)
    canary_nodes: Mapped[list[str]] = mapped_column(JSON, default=list)
    policy_digest: Mapped[str] = mapped_column(String(DIGEST_LENGTH))
    # the gate policy's canary section that decides this rollout, and whether promoting
    # it needs a signed deployment approval (the policy has a safety section)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    approval_required: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), index=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    reasons: Mapped[list[str]] = mapped_column(JSON, default=list)


def of_release(
    table: type[ReleaseRow]
    | type[AnnouncementOutboxRow]
    | type[DeploymentApprovalRow]
    | type[RolloutRow],
    fleet: str,
    channel: str,
    version: int,
) -> ColumnElement[bool]:
    """The condition selecting ``table``'s rows of one release (fleet, channel, version)."""
    return and_(table.fleet == fleet, table.channel == channel, table.version == version)
