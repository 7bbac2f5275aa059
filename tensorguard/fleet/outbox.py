"""The announcement outbox: a release made while the broker is down is still announced.

A release is recorded in the application database together with its announcement in
``announcement_outbox`` (one transaction, :meth:`FleetDatabase.record_release` with
``announcement=``). :func:`deliver_announcements` then publishes what is pending — right
after the release, and again from every process that retries (the collector,
``tensorguard fleet collect``, every few seconds) — and marks each row ``delivered`` once
the broker acknowledged it. The release topic is retained, so only the newest pending
version of a channel is published; older pending versions of that channel, and any
version not above one already delivered, are marked ``superseded`` (announcing an older
release on the retained topic would hide the newer one from nodes that connect later).

Delivering twice is harmless: the announcement is the same retained message, and the
edge agent ignores a release it already has.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import func, select, update

from tensorguard.fleet.db import (
    OUTBOX_DELIVERED,
    OUTBOX_PENDING,
    OUTBOX_SUPERSEDED,
    FleetDatabase,
)
from tensorguard.fleet.errors import MqttError
from tensorguard.fleet.messages import MessageError, ReleaseAnnouncement
from tensorguard.fleet.models import AnnouncementOutboxRow, of_release, utc_now
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.notify import announce_release, announcement_for, package_location
from tensorguard.fleet.registry import LocalRegistry, ReleaseRecord
from tensorguard.fleet.topics import release_topic

LOGGER = logging.getLogger(__name__)

Publisher = Callable[[MqttSettings, ReleaseAnnouncement], str]
ReleaseKey = tuple[str, str, int]

AnnouncementState = Literal["delivered", "queued", "not_announced"]


@dataclass(frozen=True)
class AnnouncementOutcome:
    """What became of one release's announcement.

    ``delivered``: the broker acknowledged it on ``topic``; ``queued``: it waits in the
    outbox (``detail`` says why, e.g. the broker is unreachable) and is delivered when a
    later :func:`deliver_announcements` reaches the broker; ``not_announced``: nothing
    was queued (no broker configured, or an archived backfill), ``detail`` says which.
    """

    state: AnnouncementState
    topic: str | None
    detail: str


@dataclass
class DeliveryReport:
    """What one :func:`deliver_announcements` pass did."""

    delivered: list[ReleaseKey] = field(default_factory=list)
    superseded: list[ReleaseKey] = field(default_factory=list)
    still_pending: list[ReleaseKey] = field(default_factory=list)
    error: str | None = None


def pending_announcements(database: FleetDatabase) -> list[AnnouncementOutboxRow]:
    """Queued announcements not yet delivered, oldest first."""
    with database.session() as session:
        query = (
            select(AnnouncementOutboxRow)
            .where(AnnouncementOutboxRow.state == OUTBOX_PENDING)
            .order_by(AnnouncementOutboxRow.id)
        )
        return list(session.scalars(query))


def outbox_row(
    database: FleetDatabase, fleet: str, channel: str, version: int
) -> AnnouncementOutboxRow | None:
    """The outbox row of one release, if it was queued."""
    with database.session() as session:
        return session.scalars(
            select(AnnouncementOutboxRow).where(
                of_release(AnnouncementOutboxRow, fleet, channel, version)
            )
        ).first()


def _highest_delivered(database: FleetDatabase, fleet: str, channel: str) -> int:
    with database.session() as session:
        highest = session.scalar(
            select(func.max(AnnouncementOutboxRow.version)).where(
                AnnouncementOutboxRow.fleet == fleet,
                AnnouncementOutboxRow.channel == channel,
                AnnouncementOutboxRow.state == OUTBOX_DELIVERED,
            )
        )
    return int(highest or 0)


def _mark(database: FleetDatabase, row_ids: list[int], state: str) -> None:
    if not row_ids:
        return
    values: dict[str, object] = {"state": state}
    if state == OUTBOX_DELIVERED:
        values["delivered_at"] = utc_now()
        values["last_error"] = None
    with database.session() as session:
        session.execute(
            update(AnnouncementOutboxRow)
            .where(
                AnnouncementOutboxRow.id.in_(row_ids),
                AnnouncementOutboxRow.state == OUTBOX_PENDING,
            )
            .values(**values)
        )


def _record_failure(database: FleetDatabase, row_id: int, error: str) -> None:
    with database.session() as session:
        row = session.get(AnnouncementOutboxRow, row_id)
        if row is not None:
            row.attempts += 1
            row.last_attempt_at = utc_now()
            row.last_error = error[:2000]


def deliver_announcements(
    database: FleetDatabase, settings: MqttSettings, *, publish: Publisher = announce_release
) -> DeliveryReport:
    """Publish the newest pending announcement of each channel; supersede the rest.

    Stops at the first broker failure (it is down or refuses): that row's ``attempts``
    and ``last_error`` are updated, it and every later row stay pending, and the report
    carries the error. A stored payload that no longer parses is left pending with the
    reason (never published, never dropped silently).
    """
    report = DeliveryReport()
    groups: dict[tuple[str, str], list[AnnouncementOutboxRow]] = {}
    for row in pending_announcements(database):
        groups.setdefault((row.fleet, row.channel), []).append(row)
    for (fleet, channel), rows in groups.items():
        rows.sort(key=lambda row: row.version)
        newest = rows[-1]
        older = [row.id for row in rows[:-1]]
        if report.error is not None:
            report.still_pending.extend((fleet, channel, row.version) for row in rows)
            continue
        if newest.version <= _highest_delivered(database, fleet, channel):
            _mark(database, [row.id for row in rows], OUTBOX_SUPERSEDED)
            report.superseded.extend((fleet, channel, row.version) for row in rows)
            continue
        try:
            announcement = ReleaseAnnouncement.from_payload(newest.payload.encode("utf-8"))
        except MessageError as exc:
            _record_failure(database, newest.id, f"stored announcement is invalid: {exc}")
            report.still_pending.append((fleet, channel, newest.version))
            continue
        try:
            publish(settings, announcement)
        except MqttError as exc:
            report.error = str(exc)
            _record_failure(database, newest.id, report.error)
            report.still_pending.extend((fleet, channel, row.version) for row in rows)
            LOGGER.warning(
                "announcement of %s/%s v%d stays queued: %s", fleet, channel, newest.version, exc
            )
            continue
        _mark(database, [newest.id], OUTBOX_DELIVERED)
        _mark(database, older, OUTBOX_SUPERSEDED)
        report.delivered.append((fleet, channel, newest.version))
        report.superseded.extend((fleet, channel, row.version) for row in rows[:-1])
    return report


def outcome_after_delivery(
    database: FleetDatabase, announcement: ReleaseAnnouncement, report: DeliveryReport
) -> AnnouncementOutcome:
    """The outcome of ``announcement`` after a delivery pass ``report``."""
    topic = release_topic(announcement.fleet, announcement.channel)
    row = outbox_row(database, announcement.fleet, announcement.channel, announcement.version)
    if row is not None and row.state == OUTBOX_DELIVERED:
        return AnnouncementOutcome("delivered", topic, f"announced on {topic}")
    if row is not None and row.state == OUTBOX_SUPERSEDED:
        return AnnouncementOutcome(
            "not_announced", None, "superseded by a newer release of the channel"
        )
    reason = report.error or (row.last_error if row is not None else None) or "not attempted"
    return AnnouncementOutcome(
        "queued",
        topic,
        f"queued in the announcement outbox; delivered when the broker is reachable "
        f"(tensorguard fleet collect retries): {reason}",
    )


def record_release_and_announce(
    registry: LocalRegistry,
    record: ReleaseRecord,
    *,
    database_url: str,
    fleet: str,
    mqtt: MqttSettings | None,
    gate_decision_digest: str | None,
    actor: str,
    service_url: str | None = None,
    publish: Publisher = announce_release,
) -> AnnouncementOutcome:
    """Record a published release and queue its announcement in one transaction, then
    deliver what the outbox holds.

    A broker that is down does not fail the release: the outcome is ``queued`` and the
    announcement is delivered by the next :func:`deliver_announcements` that reaches the
    broker. Nothing is queued without a broker (``mqtt`` None, development only) or for an
    archived backfill (``record.archived``: never offered as an upgrade).
    """
    announce = mqtt is not None and not record.archived
    announcement = announcement_for(
        registry,
        record,
        fleet,
        gate_decision_digest=gate_decision_digest,
        service_url=service_url,
    )
    database = FleetDatabase(database_url)
    try:
        database.record_release(
            fleet,
            record,
            package_location(registry, record, service_url),
            gate_decision_digest=gate_decision_digest,
            actor=actor,
            announcement=announcement if announce else None,
        )
        if mqtt is None:
            return AnnouncementOutcome(
                "not_announced", None, "no broker configured (set TG_MQTT_HOST)"
            )
        if record.archived:
            return AnnouncementOutcome(
                "not_announced", None, "an archived backfill is never announced"
            )
        report = deliver_announcements(database, mqtt, publish=publish)
        return outcome_after_delivery(database, announcement, report)
    finally:
        database.close()
