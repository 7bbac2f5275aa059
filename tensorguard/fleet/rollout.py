"""Telemetry-gated canary rollout: start, decide, promote or roll back a release.

With a ``canary`` section in the gate policy a published release is not announced to
the whole channel. :func:`start_rollout` picks the canary cohort (deterministic, see
:func:`tensorguard.fleet.canary.canary_cohort`) among the channel's enrolled nodes,
records a ``rollouts`` row and :func:`announce_to_canary` announces the release on each
cohort member's own release topic. Then, periodically (a Dagster sensor),
:func:`decide_rollout` reads the cohort's telemetry since the rollout began from the
application DB and applies :func:`~tensorguard.fleet.canary.canary_decision`:

* ``promote`` — :func:`promote`: the release is announced on the channel's topic (every
  node installs it);
* ``rollback`` — :func:`roll_back`: the registry marks the release revoked, the nodes'
  own announcements are cleared and a rollback order signed with the release key
  (:mod:`tensorguard.fleet.rollback_order`) makes every canary node reinstall the previous
  release (its high-water mark stays at the revoked version);
* ``wait`` — nothing changes.

Both outcomes are recorded in the ``rollouts`` row and an ``audit_log`` row (one
transaction), and appended to the signed, hash-chained rollout log
(:class:`RolloutLog`, :mod:`tensorguard.signed_log`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from sqlalchemy import select

from tensorguard.crypto import CompositeSigner, CompositeVerifyKey
from tensorguard.fleet.canary import CanaryDecision, canary_cohort, canary_decision
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.errors import FleetError
from tensorguard.fleet.messages import ReleaseAnnouncement
from tensorguard.fleet.models import EdgeNode, RolloutRow, of_release, record_audit, utc_now
from tensorguard.fleet.mqtt import MqttConnection, MqttSettings
from tensorguard.fleet.notify import announce_release
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.fleet.rollback_order import RollbackOrder, sign_rollback_order
from tensorguard.fleet.topics import node_release_topic, rollback_topic
from tensorguard.gate.canary_policy import CanaryPolicy
from tensorguard.service.approvals import ApprovalStore
from tensorguard.service.errors import NoTelemetryError
from tensorguard.service.telemetry import TelemetryStore
from tensorguard.signed_log import SignedLog

CANARY: Final = "canary"
PROMOTED: Final = "promoted"
ROLLED_BACK: Final = "rolled_back"
LOG_CONTEXT: Final = b"tensorguard/rollout-log/v1"


class RolloutError(FleetError):
    """A rollout cannot start or cannot be applied (with what to do about it)."""


@dataclass(frozen=True)
class Rollout:
    """A canary rollout as recorded in the ``rollouts`` table."""

    fleet: str
    channel: str
    version: int
    digest: str
    previous_version: int | None
    canary_nodes: tuple[str, ...]
    policy_digest: str
    policy: CanaryPolicy
    approval_required: bool
    status: str
    started_at: datetime
    decided_at: datetime | None
    reasons: tuple[str, ...]

    @property
    def subject(self) -> str:
        """How the audit log names the release."""
        return f"release:{self.fleet}/{self.channel}/{self.version}"


def _view(row: RolloutRow) -> Rollout:
    return Rollout(
        fleet=row.fleet,
        channel=row.channel,
        version=row.version,
        digest=row.digest,
        previous_version=row.previous_version,
        canary_nodes=tuple(row.canary_nodes),
        policy_digest=row.policy_digest,
        policy=CanaryPolicy.model_validate(row.policy),
        approval_required=row.approval_required,
        status=row.status,
        started_at=row.started_at,
        decided_at=row.decided_at,
        reasons=tuple(row.reasons),
    )


class RolloutLog:
    """The signed, hash-chained log of rollout outcomes (signed with the release key)."""

    def __init__(self, path: Path, verify_key: CompositeVerifyKey) -> None:
        self._log = SignedLog(
            path=path,
            verify_key=verify_key,
            context=LOG_CONTEXT,
            error=RolloutError,
            name="rollout log",
            signer="the release key",
            remedy="Investigate the host; the rollouts table and audit_log hold the same events",
        )

    def records(self) -> list[dict[str, object]]:
        """Every outcome, each signature and the chain checked."""
        return list(self._log.records())

    def append(self, signer: CompositeSigner, rollout: Rollout) -> None:
        """Record ``rollout``'s outcome."""
        self._log.append(
            signer,
            {
                "event": f"rollout.{rollout.status}",
                "fleet": rollout.fleet,
                "channel": rollout.channel,
                "version": rollout.version,
                "digest": rollout.digest,
                "previous_version": rollout.previous_version,
                "canary_nodes": list(rollout.canary_nodes),
                "policy_digest": rollout.policy_digest,
                "approval_required": rollout.approval_required,
                "reasons": list(rollout.reasons),
                "decided_at": rollout.decided_at.isoformat() if rollout.decided_at else None,
            },
        )


def channel_nodes(database: FleetDatabase, fleet: str, channel: str) -> list[str]:
    """The node ids registered in ``fleet`` that follow ``channel``."""
    with database.session() as session:
        return list(
            session.scalars(
                select(EdgeNode.node_id).where(EdgeNode.fleet == fleet, EdgeNode.channel == channel)
            ).all()
        )


def start_rollout(
    database: FleetDatabase,
    *,
    fleet: str,
    channel: str,
    version: int,
    digest: str,
    previous_version: int | None,
    policy: CanaryPolicy,
    policy_digest: str,
    actor: str,
    approval_required: bool = False,
) -> Rollout:
    """Record a canary rollout of a published release to its cohort (``policy.fraction``
    of the channel's nodes, salted with ``<fleet>/<channel>``), with the policy that
    decides it and whether promoting it needs a signed deployment approval. Starting the
    same rollout again returns the recorded one. Refuses a channel without nodes."""
    with database.session() as session:
        existing = session.scalars(
            select(RolloutRow).where(of_release(RolloutRow, fleet, channel, version))
        ).first()
        if existing is not None:
            return _view(existing)
    cohort = canary_cohort(
        channel_nodes(database, fleet, channel), policy.fraction, f"{fleet}/{channel}"
    )
    if not cohort:
        raise RolloutError(
            f"no edge node follows {fleet}/{channel}; enrol nodes before rolling out a "
            "release, or remove the policy's canary section"
        )
    row = RolloutRow(
        fleet=fleet,
        channel=channel,
        version=version,
        digest=digest,
        previous_version=previous_version,
        canary_nodes=sorted(cohort),
        policy_digest=policy_digest,
        policy=policy.model_dump(mode="json"),
        approval_required=approval_required,
        status=CANARY,
        started_at=utc_now(),
        reasons=[],
    )
    with database.session() as session:
        session.add(row)
        record_audit(
            session,
            actor,
            "rollout.started",
            f"release:{fleet}/{channel}/{version}",
            {"canary_nodes": sorted(cohort), "previous_version": previous_version},
        )
        session.flush()
        return _view(row)


def open_rollouts(database: FleetDatabase) -> list[Rollout]:
    """Every rollout still in its canary stage, oldest first."""
    with database.session() as session:
        rows = session.scalars(
            select(RolloutRow).where(RolloutRow.status == CANARY).order_by(RolloutRow.id)
        ).all()
        return [_view(row) for row in rows]


def rollout_of(database: FleetDatabase, fleet: str, channel: str, version: int) -> Rollout:
    """The recorded rollout of a release; :class:`RolloutError` if there is none."""
    with database.session() as session:
        row = session.scalars(
            select(RolloutRow).where(of_release(RolloutRow, fleet, channel, version))
        ).first()
        if row is None:
            raise RolloutError(f"no rollout of {fleet}/{channel} v{version} is recorded")
        return _view(row)


def announce_to_canary(
    settings: MqttSettings, announcement: ReleaseAnnouncement, rollout: Rollout
) -> list[str]:
    """Announce the release on each canary node's own release topic (QoS 1, retained);
    return the topics once the broker acknowledged every one."""
    topics = [
        node_release_topic(rollout.fleet, rollout.channel, node) for node in rollout.canary_nodes
    ]
    with MqttConnection(settings, f"tensorguard-canary-{secrets.token_hex(4)}") as connection:
        for topic in topics:
            connection.publish(topic, announcement.to_payload(), qos=1, retain=True)
    return topics


def decide_rollout(
    database: FleetDatabase,
    rollout: Rollout,
    *,
    telemetry_window_s: int,
    now: datetime | None = None,
) -> CanaryDecision:
    """The canary decision for ``rollout`` under its recorded policy, from its cohort's
    telemetry received since the rollout began (and within ``telemetry_window_s``); no
    telemetry is ``None``, never a made-up value."""
    policy = rollout.policy
    elapsed = ((now or utc_now()) - rollout.started_at).total_seconds()
    store = TelemetryStore(database, telemetry_window_s)
    try:
        summary = store.nodes_summary(
            f"canary:{rollout.channel}:{rollout.version}",
            rollout.canary_nodes,
            since=rollout.started_at,
        )
    except NoTelemetryError:
        return canary_decision(None, policy, elapsed_s=elapsed)
    return canary_decision(summary.canary_window(elapsed), policy)


def _finish(
    database: FleetDatabase, rollout: Rollout, status: str, reasons: tuple[str, ...], actor: str
) -> Rollout:
    with database.session() as session:
        row = session.scalars(
            select(RolloutRow).where(
                of_release(RolloutRow, rollout.fleet, rollout.channel, rollout.version)
            )
        ).one()
        if row.status != CANARY:
            raise RolloutError(
                f"the rollout of {rollout.subject} was already {row.status}; nothing to do"
            )
        row.status, row.decided_at, row.reasons = status, utc_now(), list(reasons)
        record_audit(
            session,
            actor,
            f"rollout.{status}",
            rollout.subject,
            {"reasons": list(reasons), "canary_nodes": list(rollout.canary_nodes)},
        )
        session.flush()
        return _view(row)


def promote(
    database: FleetDatabase,
    rollout: Rollout,
    reasons: tuple[str, ...],
    *,
    announcement: ReleaseAnnouncement,
    mqtt: MqttSettings,
    log: RolloutLog,
    signer: CompositeSigner,
    actor: str,
) -> Rollout:
    """Announce the release to the whole channel and record the promotion. A rollout
    that needs a deployment approval is promoted only with a verified signed approval
    of this release (:meth:`ApprovalStore.require_approval`; raises otherwise)."""
    if (announcement.version, announcement.digest) != (rollout.version, rollout.digest):
        raise RolloutError("the announcement to promote is not the rollout's release")
    if rollout.approval_required:
        approval = ApprovalStore(database).require_approval(
            rollout.fleet, rollout.channel, rollout.version
        )
        reasons = (*reasons, f"deployment approved by {approval.approver!r} (signature verified)")
    announce_release(mqtt, announcement)
    finished = _finish(database, rollout, PROMOTED, reasons, actor)
    log.append(signer, finished)
    return finished


def roll_back(
    database: FleetDatabase,
    registry: LocalRegistry,
    rollout: Rollout,
    reasons: tuple[str, ...],
    *,
    restore: ReleaseAnnouncement,
    mqtt: MqttSettings,
    log: RolloutLog,
    signer: CompositeSigner,
    actor: str,
) -> Rollout:
    """Revoke the release in the registry (and re-sign the channel's freshness statement,
    whose minimum is then the previous release), clear the canary nodes' announcements,
    publish a signed rollback order to reinstall ``restore`` (the previous release), and
    record the rollback."""
    if restore.version != rollout.previous_version:
        raise RolloutError(
            f"the release to restore is v{restore.version}, but the rollout recorded "
            f"v{rollout.previous_version} as the previous release"
        )
    registry.revoke(rollout.channel, rollout.version)
    # the channel's signed minimum version (tensorguard.tgsp._freshness) no longer names it
    registry.publish_freshness(rollout.channel, signer)
    order = RollbackOrder(
        fleet=rollout.fleet,
        channel=rollout.channel,
        revoked_version=rollout.version,
        revoked_digest=rollout.digest,
        restore=restore,
        reason="; ".join(reasons)[:2048],
    )
    signed = sign_rollback_order(order, signer)
    with MqttConnection(
        settings=mqtt, client_id=f"tensorguard-rollback-{secrets.token_hex(4)}"
    ) as connection:
        for node in rollout.canary_nodes:  # an empty retained payload clears the topic
            connection.publish(
                node_release_topic(rollout.fleet, rollout.channel, node), b"", qos=1, retain=True
            )
        connection.publish(
            rollback_topic(rollout.fleet, rollout.channel), signed.to_payload(), qos=1, retain=True
        )
    finished = _finish(database, rollout, ROLLED_BACK, reasons, actor)
    log.append(signer, finished)
    return finished
