"""The fleet collector: node registrations and install reports from MQTT into the
application database, each recorded once, with a signed audit log.

The collector subscribes to a fleet's install reports
(``tensorguard/v1/{fleet}/+/nodes/+/install``) and connection states
(``tensorguard/v1/{fleet}/_connection/+``). For each message it

1. parses it strictly and checks that its topic names the node and fleet it claims (with
   the shipped broker ACL a node can only write its own topics, so the topic's node id
   is the authenticated one);
2. registers a node the first time it is heard from — only a node **enrolled** as a
   package recipient (``<node>.xwing.pub`` in the recipients directory,
   ``TG_FLEET_RECIPIENTS_DIR``), with that key's fingerprint; any other node is refused
   and logged, so an unknown client cannot add rows;
3. stores an install report once: the same report (a retained message re-delivered on
   every reconnect) has the same digest and is skipped
   (:meth:`FleetDatabase.store_install_report`).

Each registration and each new report is also appended to a composite-signed,
hash-chained log (:class:`CollectorAuditLog`, :mod:`tensorguard.signed_log`), keyed so a
record is appended once even when the database write and the log append are separated
by a crash (the redelivered message completes whichever is missing). Between messages
the collector delivers the announcement outbox (:mod:`tensorguard.fleet.outbox`), so a
release made while the broker was down is announced when it is back.

Run it as ``tensorguard fleet collect`` (docs/FLEET.md, docs/OPERATIONS.md).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from tensorguard.crypto import CompositeSigner, CompositeVerifyKey
from tensorguard.errors import TensorGuardError
from tensorguard.fleet.db import FleetDatabase, install_report_digest
from tensorguard.fleet.errors import FleetDatabaseError, FleetError
from tensorguard.fleet.messages import ConnectionMessage, InstallReport, MessageError
from tensorguard.fleet.mqtt import MqttConnection, MqttSettings
from tensorguard.fleet.outbox import DeliveryReport, deliver_announcements
from tensorguard.fleet.provisioning import PUBLIC_KEY_SUFFIX
from tensorguard.fleet.topics import connection_topic, install_report_filter, install_report_topic
from tensorguard.signed_log import SignedLog
from tensorguard.tgsp import load_recipient_public_key, load_verify_key, write_key_file

LOGGER = logging.getLogger(__name__)

COLLECTOR_AUDIT_CONTEXT = b"tensorguard/fleet/collector-audit/v1"
COLLECTOR_AUDIT_FORMAT = "tensorguard.fleet.collector-audit/v1"
DEFAULT_AUDIT_KEY_NAME = "fleet-collector-audit"
PINNED_KEY_SUFFIX = ".pub"


class CollectorError(FleetError):
    """The collector cannot run: its audit log or key is unusable, or the log is broken."""


class Outcome(StrEnum):
    """What the collector did with one message."""

    STORED = "stored"
    DUPLICATE = "duplicate"
    SEEN = "seen"
    REFUSED = "refused"
    INVALID = "invalid"


class CollectorAuditLog:
    """The collector's signed log; the verify key is pinned next to it on first use.

    The pin (``<log>.pub``) makes a later start with another key fail instead of
    continuing the log under a key nobody checked.
    """

    def __init__(self, path: Path, signer: CompositeSigner) -> None:
        self.path = path
        self.pin_path = path.with_name(path.name + PINNED_KEY_SUFFIX)
        self._signer = signer
        verify_key = self._pinned(signer.public_key())
        self._log = SignedLog(
            path,
            verify_key,
            context=COLLECTOR_AUDIT_CONTEXT,
            error=CollectorError,
            name="fleet collector audit log",
            signer=f"the pinned collector key {verify_key.fingerprint()[:16]}…",
            remedy="Treat the collected history as untrusted and restore the log from backup",
        )
        self._keys = {str(record.get("key")) for record in self._log.records()}

    def _pinned(self, public: CompositeVerifyKey) -> CompositeVerifyKey:
        if not self.pin_path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_key_file(self.pin_path, public)
            return public
        pinned = load_verify_key(self.pin_path)
        if pinned.fingerprint() != public.fingerprint():
            raise CollectorError(
                f"the collector's audit key {public.fingerprint()[:16]}… is not the key "
                f"pinned for {self.path} ({pinned.fingerprint()[:16]}… in {self.pin_path}); "
                "use the key that started this log (--audit-key-name) or start a new log"
            )
        return pinned

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def records(self) -> list[dict[str, Any]]:
        """Every record, after checking signatures and the hash chain."""
        return self._log.records()

    def append_once(self, key: str, event: str, details: dict[str, Any]) -> bool:
        """Sign and append a record unless one with ``key`` exists; True if appended."""
        if key in self._keys:
            return False
        self._log.append(
            self._signer,
            {
                "format": COLLECTOR_AUDIT_FORMAT,
                "event": event,
                "key": key,
                "at": datetime.now(UTC).replace(microsecond=0).isoformat(),
                "details": details,
            },
        )
        self._keys.add(key)
        return True


def enrolled_recipients(directory: Path | None) -> Callable[[str], str | None]:
    """A lookup node id -> fingerprint of its enrolled ``<node>.xwing.pub`` (or None)."""

    def lookup(node_id: str) -> str | None:
        if directory is None:
            return None
        path = directory / f"{node_id}{PUBLIC_KEY_SUFFIX}"
        if not path.is_file():
            return None
        return load_recipient_public_key(path).fingerprint()

    return lookup


@dataclass
class CollectorStats:
    """Counts of what the collector did, by outcome."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, outcome: Outcome) -> None:
        """Count one message."""
        self.counts[outcome.value] = self.counts.get(outcome.value, 0) + 1


class FleetCollector:
    """Turns fleet MQTT messages into database rows and signed log records."""

    def __init__(
        self,
        database: FleetDatabase,
        fleet: str,
        *,
        audit: CollectorAuditLog,
        recipient_fingerprint: Callable[[str], str | None],
        default_channel: str,
        actor: str = "fleet-collector",
    ) -> None:
        self.database = database
        self.fleet = fleet
        self.audit = audit
        self._recipient_fingerprint = recipient_fingerprint
        self.default_channel = default_channel
        self.actor = actor
        self.stats = CollectorStats()

    @property
    def topic_filters(self) -> list[str]:
        """What the collector subscribes to."""
        connections = connection_topic(self.fleet, "node").rsplit("/", 1)[0] + "/+"
        return [install_report_filter(self.fleet), connections]

    def handle(self, topic: str, payload: bytes) -> Outcome:
        """Process one message (on the caller's thread); never raises for bad input."""
        if not payload:
            return Outcome.SEEN  # a cleared retained message
        try:
            if topic.endswith("/install"):
                outcome = self._install_report(topic, InstallReport.from_payload(payload))
            else:
                outcome = self._connection(topic, ConnectionMessage.from_payload(payload))
        except MessageError as exc:
            LOGGER.warning("ignoring an invalid message on %s: %s", topic, exc)
            outcome = Outcome.INVALID
        self.stats.add(outcome)
        return outcome

    def _registered(self, node_id: str, fleet: str, channel: str) -> bool:
        """Register ``node_id`` if it is new and enrolled; False if it may not report."""
        node = self.database.node(node_id)
        if node is None:
            fingerprint = self._recipient_fingerprint(node_id)
            if fingerprint is None:
                LOGGER.warning(
                    "refusing messages from node %r: it is not enrolled (no %s%s in the "
                    "recipients directory); enrol it with `tensorguard agent enrol`",
                    node_id,
                    node_id,
                    PUBLIC_KEY_SUFFIX,
                )
                return False
            try:
                node = self.database.register_node(
                    node_id,
                    fleet,
                    channel,
                    recipient_fingerprint=fingerprint,
                    actor=self.actor,
                )
            except FleetDatabaseError:
                node = self.database.node(node_id)  # registered meanwhile by another writer
                if node is None:
                    raise
        if node.fleet != fleet:
            LOGGER.warning(
                "refusing a message from node %r for fleet %r: it is registered in fleet %r",
                node_id,
                fleet,
                node.fleet,
            )
            return False
        self.audit.append_once(
            f"node-registered:{node_id}",
            "node-registered",
            {
                "node_id": node_id,
                "fleet": node.fleet,
                "channel": node.channel,
                "recipient_fingerprint": node.recipient_fingerprint,
            },
        )
        return True

    def _install_report(self, topic: str, report: InstallReport) -> Outcome:
        if report.fleet != self.fleet or topic != install_report_topic(
            report.fleet, report.channel, report.node_id
        ):
            LOGGER.warning("ignoring an install report whose topic %s does not match it", topic)
            return Outcome.INVALID
        if not self._registered(report.node_id, report.fleet, report.channel):
            return Outcome.REFUSED
        _row, new = self.database.store_install_report(report)
        digest = install_report_digest(report)
        appended = self.audit.append_once(
            f"install-report:{report.node_id}:{digest}",
            "install-report",
            {
                "node_id": report.node_id,
                "fleet": report.fleet,
                "channel": report.channel,
                "version": report.version,
                "outcome": report.outcome.value,
                "reason_code": report.reason_code.value,
                "package_digest": report.digest,
                "report_digest": digest,
            },
        )
        return Outcome.STORED if new or appended else Outcome.DUPLICATE

    def _connection(self, topic: str, message: ConnectionMessage) -> Outcome:
        if message.fleet != self.fleet or topic != connection_topic(message.fleet, message.node_id):
            LOGGER.warning("ignoring a connection message whose topic %s does not match", topic)
            return Outcome.INVALID
        if not self._registered(message.node_id, message.fleet, self.default_channel):
            return Outcome.REFUSED
        return Outcome.SEEN


Message = tuple[str, bytes]


class CollectorService:
    """The collector's MQTT session: messages are queued by the network thread and
    processed, with outbox deliveries every ``outbox_interval_s``, on the caller's."""

    def __init__(
        self,
        collector: FleetCollector,
        settings: MqttSettings,
        *,
        outbox_interval_s: float = 5.0,
        client_id: str | None = None,
    ) -> None:
        self.collector = collector
        self.settings = settings
        self.outbox_interval_s = outbox_interval_s
        self._messages: queue.Queue[Message] = queue.Queue()
        self._connection = MqttConnection(
            settings, client_id or f"tensorguard-collector-{secrets.token_hex(4)}"
        )
        self.last_delivery: DeliveryReport | None = None

    def _receive(self, topic: str, payload: bytes) -> None:
        self._messages.put((topic, payload))

    def deliver_outbox(self) -> DeliveryReport:
        """Deliver pending announcements now (the broker may be down: then they wait)."""
        self.last_delivery = deliver_announcements(self.collector.database, self.settings)
        return self.last_delivery

    def run(self, stop: threading.Event, *, duration_s: float | None = None) -> CollectorStats:
        """Connect, subscribe, and process until ``stop`` is set (or ``duration_s`` ends).

        The paho client reconnects on its own after a broker outage and re-subscribes,
        so retained reports are delivered again; they are stored once.
        """
        self._connection.connect_subscribed(self.collector.topic_filters, self._receive)
        deadline = None if duration_s is None else time.monotonic() + duration_s
        next_delivery = time.monotonic()
        try:
            while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                if time.monotonic() >= next_delivery:
                    self._deliver_quietly()
                    next_delivery = time.monotonic() + self.outbox_interval_s
                try:
                    topic, payload = self._messages.get(timeout=0.2)
                except queue.Empty:
                    continue
                self.collector.handle(topic, payload)
            self._drain()
            self._deliver_quietly()
        finally:
            self._connection.disconnect()
        return self.collector.stats

    def _drain(self) -> None:
        while True:
            try:
                topic, payload = self._messages.get_nowait()
            except queue.Empty:
                return
            self.collector.handle(topic, payload)

    def _deliver_quietly(self) -> None:
        try:
            report = self.deliver_outbox()
        except TensorGuardError as exc:
            LOGGER.error("announcement outbox delivery failed: %s", exc)
            return
        for fleet, channel, version in report.delivered:
            LOGGER.info("delivered the queued announcement of %s/%s v%d", fleet, channel, version)
