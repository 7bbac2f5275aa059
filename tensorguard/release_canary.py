"""The release step's canary stage: whether a published release goes to a canary cohort
first, and starting that rollout (:mod:`tensorguard.fleet.rollout`).

With a ``canary`` section in the gate policy a release is recorded in the application
DB **without** queueing a channel-wide announcement; the rollout is started and the
release is announced on the canary nodes' own topics only. The channel hears of it when
the canary sensor promotes it. A canary needs something to fall back to and someone to
try it on: the first release of a channel (no previous release) goes to the whole
channel, and so does a release of a channel without enrolled nodes in the application
DB — except in production, which refuses it (enrol the nodes first).
"""

from __future__ import annotations

from dataclasses import dataclass

from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.notify import announcement_for
from tensorguard.fleet.outbox import record_release_and_announce
from tensorguard.fleet.registry import LocalRegistry, ReleaseRecord
from tensorguard.fleet.rollout import (
    Rollout,
    RolloutError,
    announce_to_canary,
    channel_nodes,
    start_rollout,
)
from tensorguard.gate import GateDecision


@dataclass(frozen=True)
class CanaryPlan:
    """Whether the release goes to a canary first; ``note`` says why (or why not)."""

    applies: bool
    previous_version: int | None
    note: str


def previous_release(registry: LocalRegistry, record: ReleaseRecord) -> ReleaseRecord | None:
    """The channel's release a rollback of ``record`` falls back to: the highest version
    below it that is neither archived nor revoked."""
    earlier = [
        r
        for r in registry.releases(record.channel)
        if r.version < record.version and not (r.archived or r.revoked)
    ]
    return earlier[-1] if earlier else None


def canary_plan(
    registry: LocalRegistry,
    record: ReleaseRecord,
    decision: GateDecision,
    *,
    database_url: str,
    fleet: str,
    production: bool,
) -> CanaryPlan:
    """Decide the canary stage of a published ``record`` (see the module docstring)."""
    if decision.policy.canary is None:
        return CanaryPlan(False, None, "the gate policy has no canary section")
    if record.archived:
        return CanaryPlan(False, None, "an archived backfill is never announced")
    previous = previous_release(registry, record)
    if previous is None:
        return CanaryPlan(False, None, "first release of the channel: nothing to fall back to")
    database = FleetDatabase(database_url)
    try:
        nodes = channel_nodes(database, fleet, record.channel)
    finally:
        database.close()
    if not nodes:
        note = (
            f"no edge node of {fleet}/{record.channel} is enrolled in the application DB, "
            "so there is no cohort to try the release on"
        )
        if production:
            raise RolloutError(
                f"{note}; production refuses to release past the canary stage: enrol the "
                "nodes (POST /v1/nodes) or remove the policy's canary section"
            )
        return CanaryPlan(False, previous.version, f"{note}; released to the whole channel")
    return CanaryPlan(True, previous.version, f"canary of {len(nodes)} enrolled node(s)")


def record_and_start_canary(
    registry: LocalRegistry,
    record: ReleaseRecord,
    plan: CanaryPlan,
    *,
    database_url: str,
    fleet: str,
    mqtt: MqttSettings | None,
    decision: GateDecision,
    actor: str,
    service_url: str | None = None,
) -> tuple[Rollout, list[str]]:
    """Record the release (no channel-wide announcement queued), start its rollout and
    announce it to the canary nodes; return the rollout and the topics announced on
    (none without a broker, development only)."""
    policy = decision.policy.canary
    if policy is None or not plan.applies:
        raise RolloutError("this release has no canary stage; announce it to the channel")
    record_release_and_announce(
        registry,
        record,
        database_url=database_url,
        fleet=fleet,
        mqtt=None,  # recorded only: the channel hears of it when the canary is promoted
        gate_decision_digest=decision.digest(),
        actor=actor,
        service_url=service_url,
    )
    database = FleetDatabase(database_url)
    try:
        rollout = start_rollout(
            database,
            fleet=fleet,
            channel=record.channel,
            version=record.version,
            digest=record.digest,
            previous_version=plan.previous_version,
            policy=policy,
            policy_digest=decision.policy_digest,
            actor=actor,
            approval_required=decision.policy.safety is not None,
        )
    finally:
        database.close()
    if mqtt is None:
        return rollout, []
    announcement = announcement_for(
        registry,
        record,
        fleet,
        gate_decision_digest=decision.digest(),
        service_url=service_url,
    )
    return rollout, announce_to_canary(mqtt, announcement, rollout)
