"""Telemetry posted by edge nodes: idempotent ingest and windowed summaries.

Ingest is keyed by (node, message id): a retried post is stored once and reported as a
duplicate. Summaries aggregate only rows that arrived within the window; when none did,
:class:`~tensorguard.service.errors.NoTelemetryError` says so. Nothing is synthesised.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tensorguard.fleet.canary import CanaryTelemetry
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.errors import FleetDatabaseError
from tensorguard.fleet.models import EdgeNode, NodeCredential, TelemetrySample, utc_now
from tensorguard.service.errors import NoTelemetryError, UnknownNodeError
from tensorguard.service.nodes import enrolled_node


@dataclass(frozen=True)
class TelemetryReading:
    """One telemetry message as a node sends it."""

    message_id: str
    sent_at: datetime
    installed_version: int | None = None
    install_outcome: str | None = None
    inference_latency_ms: float | None = None
    error_rate: float | None = None
    safety_events: int = 0
    cpu_percent: float | None = None
    memory_mb: float | None = None


@dataclass(frozen=True)
class TelemetrySummary:
    """Aggregates over the samples that arrived in the window (all real, none made up)."""

    scope: Literal["node", "cohort"]
    name: str
    window_s: int
    since: datetime
    samples: int
    nodes_reporting: int
    nodes_enrolled: int
    last_received_at: datetime
    mean_inference_latency_ms: float | None
    max_inference_latency_ms: float | None
    mean_error_rate: float | None
    max_error_rate: float | None
    safety_events: int
    install_failures: int

    def canary_window(self, elapsed_s: float) -> CanaryTelemetry:
        """This (canary cohort's) summary as the input of
        :func:`~tensorguard.fleet.canary.canary_decision`; ``elapsed_s`` is the time since
        the rollout to the cohort began. No telemetry is :class:`NoTelemetryError` from the
        store, which the decision takes as ``None``."""
        return CanaryTelemetry(
            elapsed_s=elapsed_s,
            nodes_reporting=self.nodes_reporting,
            samples=self.samples,
            mean_error_rate=self.mean_error_rate,
            mean_latency_ms=self.mean_inference_latency_ms,
            safety_events=self.safety_events,
            install_failures=self.install_failures,
        )


class TelemetryStore:
    """Stores node telemetry and answers windowed questions about it."""

    def __init__(self, database: FleetDatabase, window_s: int) -> None:
        self.database = database
        self.window_s = window_s

    def _exists(self, node_id: str, message_id: str) -> bool:
        with self.database.session() as session:
            node, _ = enrolled_node(session, node_id)
            found = session.scalars(
                select(TelemetrySample.id).where(
                    TelemetrySample.node_pk == node.id, TelemetrySample.message_id == message_id
                )
            ).first()
            return found is not None

    def ingest(self, node_id: str, reading: TelemetryReading) -> bool:
        """Store ``reading``; False when this message id was already stored (a retry)."""
        if self._exists(node_id, reading.message_id):
            return False
        try:
            with self.database.session() as session:
                node, _ = enrolled_node(session, node_id)
                now = utc_now()
                session.add(TelemetrySample(node_pk=node.id, received_at=now, **vars(reading)))
                node.last_seen_at = now
                if reading.installed_version is not None and reading.install_outcome in (
                    None,
                    "installed",
                ):
                    node.installed_version = reading.installed_version
        except FleetDatabaseError:
            if self._exists(node_id, reading.message_id):  # a concurrent retry won the race
                return False
            raise
        return True

    def node_summary(self, node_id: str) -> TelemetrySummary:
        """The node's telemetry in the window, or :class:`NoTelemetryError`."""
        with self.database.session() as session:
            node, _ = enrolled_node(session, node_id)
            scope = select(TelemetrySample).where(TelemetrySample.node_pk == node.id)
            return self._summarise(session, "node", node_id, scope, nodes_enrolled=1)

    def cohort_summary(self, cohort: str) -> TelemetrySummary:
        """The cohort's telemetry in the window, or :class:`NoTelemetryError`."""
        with self.database.session() as session:
            enrolled = session.scalar(
                select(func.count(NodeCredential.id)).where(NodeCredential.cohort == cohort)
            )
            if not enrolled:
                raise UnknownNodeError(f"no edge node is enrolled in cohort {cohort!r}")
            scope = (
                select(TelemetrySample)
                .join(NodeCredential, NodeCredential.node_pk == TelemetrySample.node_pk)
                .where(NodeCredential.cohort == cohort)
            )
            return self._summarise(session, "cohort", cohort, scope, nodes_enrolled=enrolled)

    def nodes_summary(
        self, name: str, node_ids: Collection[str], *, since: datetime
    ) -> TelemetrySummary:
        """The telemetry of ``node_ids`` (e.g. a canary cohort, summarised as cohort
        ``name``) received in the window and not before ``since`` (when the rollout to
        them began), or :class:`NoTelemetryError`."""
        with self.database.session() as session:
            scope = (
                select(TelemetrySample)
                .join(EdgeNode, EdgeNode.id == TelemetrySample.node_pk)
                .where(EdgeNode.node_id.in_(sorted(node_ids)))
            )
            return self._summarise(
                session, "cohort", name, scope, nodes_enrolled=len(node_ids), not_before=since
            )

    def _summarise(
        self,
        session: Session,
        scope_kind: Literal["node", "cohort"],
        name: str,
        scope: Select[tuple[TelemetrySample]],
        *,
        nodes_enrolled: int,
        not_before: datetime | None = None,
    ) -> TelemetrySummary:
        since = utc_now() - timedelta(seconds=self.window_s)
        if not_before is not None:
            since = max(since, not_before)
        window = scope.where(TelemetrySample.received_at >= since).subquery()
        row = session.execute(
            select(
                func.count(window.c.id),
                func.count(func.distinct(window.c.node_pk)),
                func.max(window.c.received_at),
                func.avg(window.c.inference_latency_ms),
                func.max(window.c.inference_latency_ms),
                func.avg(window.c.error_rate),
                func.max(window.c.error_rate),
                func.coalesce(func.sum(window.c.safety_events), 0),
                func.count(window.c.id).filter(
                    window.c.install_outcome.in_(("failed", "rejected"))
                ),
            )
        ).one()
        samples = int(row[0])
        if samples == 0:
            raise NoTelemetryError(
                f"no telemetry from {scope_kind} {name!r} in the last {self.window_s} s; "
                "the nodes have not reported (check that their agents run and reach the service)"
            )
        return TelemetrySummary(
            scope=scope_kind,
            name=name,
            window_s=self.window_s,
            since=since,
            samples=samples,
            nodes_reporting=int(row[1]),
            nodes_enrolled=int(nodes_enrolled),
            last_received_at=row[2],
            mean_inference_latency_ms=_float(row[3]),
            max_inference_latency_ms=_float(row[4]),
            mean_error_rate=_float(row[5]),
            max_error_rate=_float(row[6]),
            safety_events=int(row[7]),
            install_failures=int(row[8]),
        )


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
