"""The edge agent: receive release announcements, verify, install atomically, report.

For each announcement on a followed channel the agent

1. applies the one rollback rule of :mod:`tensorguard.tgsp._rollback` against the
   channel's high-water mark (kept in the state file): a lower version, or the installed
   version with another package digest, is refused; the installed package itself
   announced again (a retained announcement seen again) is ignored;
2. fetches the package (a signed, resumable ``http(s)`` download from its fleet service,
   ``file://`` or an absolute path; other schemes are refused) and checks the announced
   size and SHA-256;
3. verifies and opens it with TGSP against its **pinned trust store** and its own
   recipient key, requiring the followed channel and the same rollback rule on the
   signed version (authoritative, not the announcement), and rejecting
   expired, unsigned, untrusted or wrongly signed packages;
4. installs it: the verified tree is extracted into a new release directory, fsynced,
   and ``current/<channel>`` is switched to it with one rename; the previous release
   stays until then;
5. saves the new high-water version (atomic state file) and deletes the previous
   release;
6. reports ``installed``, ``rejected`` or ``failed`` with a reason code and a
   human-readable reason over MQTT, and (with ``service_url``) posts the outcome and
   heartbeats to the fleet service (:mod:`tensorguard.fleet.service_reports`).

:meth:`EdgeAgent.handle_release` does steps 1-5 without any network; :func:`run_once`
and :func:`serve` add the MQTT session (subscriptions, reports, VDA 5050 connection
state with a last will).
"""

from __future__ import annotations

import logging
import queue
import shutil
import signal
import threading
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tensorguard.crypto import XWingPrivateKey
from tensorguard.durable import DurableWriteError, fsync_tree
from tensorguard.fleet.agent_config import (
    AgentConfig,
    load_recipient_key,
    load_signing_key,
    load_trust_store,
    service_tls_context,
)
from tensorguard.fleet.agent_state import AgentState, AgentStateStore, ChannelState
from tensorguard.fleet.errors import AgentConfigError, AgentError, FleetError, MqttError
from tensorguard.fleet.fetch import fetch_package
from tensorguard.fleet.install import InstallLayout
from tensorguard.fleet.messages import (
    ConnectionMessage,
    ConnectionState,
    InstallOutcome,
    InstallReason,
    InstallReport,
    MessageError,
    ReleaseAnnouncement,
)
from tensorguard.fleet.mqtt import BrokerMessage, BrokerSession, MqttConnection
from tensorguard.fleet.notify import publish_install_report
from tensorguard.fleet.rejections import InstallRefused, failed, refusal_from_tgsp, rejected
from tensorguard.fleet.rollback_order import RollbackOrderError, SignedRollbackOrder
from tensorguard.fleet.service_reports import ServiceReporter
from tensorguard.fleet.topics import (
    connection_topic,
    node_release_topic,
    release_topic,
    rollback_topic,
)
from tensorguard.production import is_production
from tensorguard.service.client import NodeClient
from tensorguard.tgsp import (
    FreshnessError,
    HighWaterMark,
    RollbackError,
    StaleReleaseError,
    TGSPError,
    TrustStore,
    VerificationPolicy,
    check_freshness,
    check_rollback,
    open_package,
    verify_freshness,
)

LOGGER = logging.getLogger(__name__)


def _high_water_mark(entry: ChannelState | None) -> HighWaterMark | None:
    """The channel's mark for the one rollback rule: the installed version and package."""
    if entry is None:
        return None
    return HighWaterMark(entry.high_water_version, entry.package_digest)


class EdgeAgent:
    """Installs releases for one node; see the module docstring for the steps."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        trust_store: TrustStore,
        recipient_key: XWingPrivateKey,
        node_key: Ed25519PrivateKey | None = None,
    ) -> None:
        self.config = config
        self._trust_store = trust_store
        self._recipient_key = recipient_key
        self._service: NodeClient | None = None
        if config.service_url is not None:
            if node_key is None:
                raise AgentConfigError(
                    "service_url is set but no node key was given; set node_key_file"
                )
            self._service = NodeClient(
                config.service_url,
                config.node_id,
                node_key,
                tls_context=service_tls_context(config),
            )
        self.service_reporter = None if self._service is None else ServiceReporter(self._service)
        self.layout = InstallLayout(config.state_dir)
        self._state_store = AgentStateStore(config.state_dir)
        self.state: AgentState = self._state_store.load()

    @classmethod
    def from_config(cls, config: AgentConfig) -> EdgeAgent:
        """Load the trust store, recipient key and node key the configuration names."""
        return cls(
            config,
            trust_store=load_trust_store(config),
            recipient_key=load_recipient_key(config),
            node_key=load_signing_key(config),
        )

    def __repr__(self) -> str:
        return f"EdgeAgent(node_id={self.config.node_id!r}, fleet={self.config.fleet!r})"

    def installed_version(self, channel: str | None = None) -> int | None:
        """The installed version of ``channel`` (default: the first followed channel)."""
        entry = self.state.channels.get(channel or self.config.channels[0])
        return None if entry is None else entry.running_version

    def release_topics(self) -> list[str]:
        """Every topic the agent takes announcements from: each followed channel's, and
        this node's own (a canary release), plus each channel's signed rollback orders."""
        fleet, node_id = self.config.fleet, self.config.node_id
        return [
            topic
            for channel in self.config.channels
            for topic in (
                release_topic(fleet, channel),
                node_release_topic(fleet, channel, node_id),
                rollback_topic(fleet, channel),
            )
        ]

    def recover(self) -> None:
        """Remove leftovers of an interrupted install (downloads, unreferenced trees);
        partial downloads are kept to be resumed."""
        self.layout.clear_downloads(keep_partial=True)
        for channel in self.config.channels:
            keep = set()
            target = self.layout.current_target(channel)
            if target is not None:
                keep.add(target)
            entry = self.state.channels.get(channel)
            if entry is not None:
                keep.add(self.config.state_dir / entry.install_dir)
            for path in self.layout.prune(channel, keep):
                LOGGER.info("removed leftover %s", path)

    def handle_payload(self, topic: str, payload: bytes) -> InstallReport | None:
        """Handle one MQTT message from a release topic; None when there is nothing to report.

        Empty payloads (a cleared retained message), payloads that are not announcements
        and announcements that do not match their topic are logged and ignored: without
        a valid announcement there is no channel and version to report on.
        """
        if not payload:
            return None
        if topic in {rollback_topic(self.config.fleet, c) for c in self.config.channels}:
            return self.handle_rollback_payload(payload)
        try:
            announcement = ReleaseAnnouncement.from_payload(payload)
        except MessageError as exc:
            LOGGER.warning("ignoring an invalid release announcement on %s: %s", topic, exc)
            return None
        if topic not in (
            release_topic(announcement.fleet, announcement.channel),
            node_release_topic(announcement.fleet, announcement.channel, self.config.node_id),
        ):
            LOGGER.warning(
                "ignoring an announcement for %s/%s received on %s",
                announcement.fleet,
                announcement.channel,
                topic,
            )
            return None
        return self.handle_release(announcement)

    def handle_release(self, announcement: ReleaseAnnouncement) -> InstallReport | None:
        """Install ``announcement``'s package if acceptable; return the report to send.

        Returns None for announcements this node does not follow and for the release
        it already has installed.
        """
        if (
            announcement.fleet != self.config.fleet
            or announcement.channel not in self.config.channels
        ):
            LOGGER.info(
                "ignoring %s/%s: not followed by this node",
                announcement.fleet,
                announcement.channel,
            )
            return None
        try:
            installed = self._install(announcement)
        except InstallRefused as refusal:
            LOGGER.warning(
                "%s %s version %d: %s",
                refusal.outcome.value,
                announcement.channel,
                announcement.version,
                refusal,
            )
            return self._report(announcement, refusal.outcome, refusal.reason_code, str(refusal))
        if installed is None:
            return None
        reason = (
            f"installed version {announcement.version} of channel {announcement.channel!r} "
            f"signed by {installed.signer_key_id[:16]} into {installed.install_dir}"
        )
        LOGGER.info("%s", reason)
        return self._report(announcement, InstallOutcome.INSTALLED, InstallReason.INSTALLED, reason)

    def handle_rollback_payload(self, payload: bytes) -> InstallReport | None:
        """Apply a signed rollback order (:mod:`tensorguard.fleet.rollback_order`) if this
        node runs exactly the revoked package: reinstall the order's restore release,
        keeping the revoked version as the high-water mark. Orders that are invalid, not
        signed by a pinned release key, or about another package are logged and ignored.
        Every node following the channel records the revoked package (``state.json``) and
        refuses it from then on, also when it never installed it."""
        try:
            order = SignedRollbackOrder.from_payload(payload).verify(self._trust_store)
        except (MessageError, RollbackOrderError) as exc:
            LOGGER.warning("ignoring a rollback order: %s", exc)
            return None
        if order.fleet != self.config.fleet or order.channel not in self.config.channels:
            return None
        if not self.state.is_revoked(order.channel, order.revoked_version, order.revoked_digest):
            revoked = self.state.with_revoked(
                order.channel, order.revoked_version, order.revoked_digest
            )
            try:
                self._state_store.save(revoked)
            except AgentError as exc:
                LOGGER.error("cannot record the revocation of %s: %s", order.channel, exc)
                return None
            self.state = revoked
        current = self.state.channels.get(order.channel)
        if (
            current is None
            or (current.high_water_version, current.package_digest)
            != (order.revoked_version, order.revoked_digest)
            or current.restored_version is not None
        ):
            return None  # not running the revoked release (or already rolled back)
        restore = order.restore
        try:
            package = fetch_package(
                restore, self.layout.downloads, self.config.max_package_bytes, self._service
            )
            try:
                entry = self._open_and_activate(restore, package, None, keep_mark=current)
            finally:
                package.unlink(missing_ok=True)
        except InstallRefused as refusal:
            LOGGER.warning("rollback to version %d: %s", restore.version, refusal)
            return self._report(restore, refusal.outcome, refusal.reason_code, str(refusal))
        reason = (
            f"rolled back: version {order.revoked_version} of channel {order.channel!r} "
            f"revoked ({order.reason[:512]}); reinstalled version {restore.version} into "
            f"{entry.install_dir}"
        )
        LOGGER.info("%s", reason)
        return self._report(restore, InstallOutcome.INSTALLED, InstallReason.INSTALLED, reason)

    def _report(
        self,
        announcement: ReleaseAnnouncement,
        outcome: InstallOutcome,
        reason_code: InstallReason,
        reason: str,
    ) -> InstallReport:
        return InstallReport(
            fleet=self.config.fleet,
            channel=announcement.channel,
            node_id=self.config.node_id,
            version=announcement.version,
            digest=announcement.digest,
            outcome=outcome,
            reason_code=reason_code,
            reason=reason[:2048],
        )

    def _install(self, announcement: ReleaseAnnouncement) -> ChannelState | None:
        channel, version = announcement.channel, announcement.version
        current = self.state.channels.get(channel)
        mark = _high_water_mark(current)
        if self.state.is_revoked(channel, version, announcement.digest) and (
            mark is None or version != mark.version
        ):
            raise rejected(
                InstallReason.ROLLBACK,
                f"version {version} of channel {channel!r} was revoked by a signed rollback "
                "order; it is never installed",
            )
        try:
            check_rollback(channel, version, announcement.digest, mark)
        except RollbackError as exc:
            raise rejected(InstallReason.ROLLBACK, str(exc)) from exc
        if mark is not None and version == mark.version:
            return None  # the installed package itself, announced again
        self._check_freshness(announcement, first_install=current is None)
        package = fetch_package(
            announcement,
            self.layout.downloads,
            self.config.max_package_bytes,
            self._service,
        )
        try:
            return self._open_and_activate(announcement, package, current)
        finally:
            package.unlink(missing_ok=True)

    def _check_freshness(self, announcement: ReleaseAnnouncement, *, first_install: bool) -> None:
        """Apply the registry's signed freshness statement (:mod:`tensorguard.tgsp._freshness`):
        always when the announcement carries one, and required for a first install on the
        channel when ``require_freshness`` is set. The signed version must later equal the
        announced one (``announcement_mismatch``), so checking the announced version here
        is enough."""
        document = announcement.freshness
        required = self.config.require_freshness
        if required is None:
            required = is_production()
        if document is None:
            if first_install and required:
                raise rejected(
                    InstallReason.FRESHNESS,
                    f"first install on channel {announcement.channel!r} without a signed "
                    "freshness statement (required by require_freshness or production "
                    "mode); the registry must "
                    "issue one (LocalRegistry.publish_freshness)",
                )
            return
        try:
            statement = verify_freshness(
                document.encode("utf-8"),
                self._trust_store,
                channel=announcement.channel,
                now=int(time.time()),
            )
            check_freshness(statement, announcement.version)
        except StaleReleaseError as exc:
            raise rejected(InstallReason.ROLLBACK, str(exc)) from exc
        except FreshnessError as exc:
            raise rejected(InstallReason.FRESHNESS, str(exc)) from exc

    def _open_and_activate(
        self,
        announcement: ReleaseAnnouncement,
        package: Path,
        current: ChannelState | None,
        *,
        keep_mark: ChannelState | None = None,
    ) -> ChannelState:
        """Verify, extract and activate; with ``keep_mark`` (a rollback order) the saved
        high-water mark stays that release's and the opened one is its restored version."""
        channel = announcement.channel
        mark = _high_water_mark(current)
        marks = None if mark is None else {channel: mark}
        policy = VerificationPolicy(expected_channel=channel, high_water_marks=marks)
        try:
            release_dir = self.layout.new_release_dir(channel, announcement.version)
            opened = open_package(
                package,
                release_dir,
                recipient_key=self._recipient_key,
                trust_store=self._trust_store,
                policy=policy,
            )
        except TGSPError as exc:
            raise refusal_from_tgsp(exc) from exc
        except (DurableWriteError, FleetError, OSError) as exc:
            raise failed(
                InstallReason.INSTALL_FAILED, f"cannot extract the package: {exc}"
            ) from exc
        signed = opened.header.release
        mismatch = signed.version != announcement.version or (
            announcement.gate_decision_digest is not None
            and announcement.gate_decision_digest != signed.gate_decision_digest
        )
        if mismatch:
            shutil.rmtree(release_dir, ignore_errors=True)
            raise rejected(
                InstallReason.ANNOUNCEMENT_MISMATCH,
                f"the signed package is version {signed.version} (gate decision "
                f"{signed.gate_decision_digest}), but the announcement says version "
                f"{announcement.version} (gate decision {announcement.gate_decision_digest})",
            )
        try:
            fsync_tree(release_dir)
            self.layout.activate(channel, release_dir)
            entry = ChannelState(
                high_water_version=signed.version
                if keep_mark is None
                else keep_mark.high_water_version,
                package_digest=announcement.digest
                if keep_mark is None
                else keep_mark.package_digest,
                install_dir=release_dir.relative_to(self.config.state_dir).as_posix(),
                signer_key_id=opened.signer_key_id,
                installed_at=datetime.now(UTC),
                restored_version=None if keep_mark is None else signed.version,
            )
            self._state_store.save(self.state.with_channel(channel, entry))
        except (AgentError, DurableWriteError, FleetError, OSError) as exc:
            raise failed(
                InstallReason.INSTALL_FAILED, f"cannot activate the release: {exc}"
            ) from exc
        self.state = self.state.with_channel(channel, entry)
        self.layout.prune(channel, {release_dir})
        return entry


class AgentSession(BrokerSession):
    """The agent's MQTT session: connection state, release subscriptions, reports.

    The MQTT password is read from ``TG_MQTT_PASSWORD`` when the session is made. On
    entry it connects with a retained ``CONNECTIONBROKEN`` last will, publishes
    ``ONLINE`` and subscribes to the release topic of every followed channel; messages
    are queued for the caller's thread. On exit it publishes ``OFFLINE`` and disconnects.
    Reports that cannot be published (broker briefly away) are kept and retried.
    """

    def __init__(self, agent: EdgeAgent) -> None:
        self.agent = agent
        config = agent.config
        self._status_topic = connection_topic(config.fleet, config.node_id)
        self._connection = MqttConnection(
            config.mqtt.with_password_from(),
            f"tensorguard-agent-{config.fleet}-{config.node_id}",
            will=self._status(ConnectionState.CONNECTIONBROKEN),
            birth=lambda: self._status(ConnectionState.ONLINE),
        )
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._unsent: deque[InstallReport] = deque()

    def _status(self, state: ConnectionState) -> BrokerMessage:
        config = self.agent.config
        payload = ConnectionMessage(fleet=config.fleet, node_id=config.node_id, state=state)
        return BrokerMessage(topic=self._status_topic, payload=payload.to_payload())

    def connect(self) -> None:
        """Connect (ONLINE on every connect, CONNECTIONBROKEN as last will), subscribe."""
        self._connection.connect_subscribed(self.agent.release_topics(), self._enqueue)

    def disconnect(self) -> None:
        """Deliver waiting reports, publish OFFLINE and leave the broker."""
        try:
            self.flush_reports()
            offline = self._status(ConnectionState.OFFLINE)
            self._connection.publish(offline.topic, offline.payload, qos=1, retain=True)
        except MqttError as error:
            LOGGER.warning("could not publish the OFFLINE state: %s", error)
        finally:
            self._connection.disconnect()

    def _enqueue(self, topic: str, payload: bytes) -> None:
        self.messages.put((topic, payload))

    def process(self, topic: str, payload: bytes) -> InstallReport | None:
        """Handle one queued message and publish its report (kept for retry on failure)."""
        report = self.agent.handle_payload(topic, payload)
        if report is not None:
            self._unsent.append(report)
            self.flush_reports()
            reporter = self.agent.service_reporter
            if reporter is not None:
                reporter.record(report, self.agent.installed_version(report.channel))
        return report

    def flush_reports(self) -> None:
        """Publish reports that are still waiting; stop at the first broker error. With a
        fleet service, also post its waiting install outcomes and a heartbeat when due."""
        reporter = self.agent.service_reporter
        if reporter is not None:
            reporter.flush()
            reporter.heartbeat(self.agent.installed_version())
        while self._unsent:
            try:
                publish_install_report(self._connection, self._unsent[0])
            except MqttError as error:
                LOGGER.warning("install report not delivered yet (will retry): %s", error)
                return
            self._unsent.popleft()

    @property
    def unsent_reports(self) -> int:
        """How many reports are waiting for the broker."""
        return len(self._unsent)


def run_once(agent: EdgeAgent, *, timeout_s: float = 30.0) -> list[InstallReport]:
    """Connect, handle each channel's current (retained) release, report, disconnect.

    Waits until every followed channel delivered an announcement or ``timeout_s``
    passed; returns the reports sent. Raises :class:`MqttError` if the broker is
    unreachable or a report could not be delivered.
    """
    agent.recover()
    reports: list[InstallReport] = []
    fleet, node_id = agent.config.fleet, agent.config.node_id
    channel_of = {release_topic(fleet, c): c for c in agent.config.channels}
    channel_of |= {node_release_topic(fleet, c, node_id): c for c in agent.config.channels}
    pending = set(channel_of.values())
    deadline = time.monotonic() + timeout_s
    with AgentSession(agent) as session:
        while pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                LOGGER.info("no announcement within %gs for %s", timeout_s, sorted(pending))
                break
            try:
                topic, payload = session.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            report = session.process(topic, payload)
            if report is not None:
                reports.append(report)
            pending.discard(channel_of.get(topic, ""))
        if session.unsent_reports:
            raise MqttError(f"{session.unsent_reports} install report(s) could not be delivered")
    return reports


def serve(agent: EdgeAgent, stop: threading.Event | None = None) -> None:
    """Run until ``stop`` is set, or until SIGTERM/SIGINT when ``stop`` is not given.

    Signal handlers are installed only when called from the main thread without a
    ``stop`` event; they set the event, so shutdown happens between installs, never in
    the middle of one, and ends with ``OFFLINE`` published and a clean disconnect.
    """
    stop_event = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if stop is None and threading.current_thread() is threading.main_thread():

        def request_stop(signum: int, _frame: FrameType | None) -> None:
            LOGGER.info("received %s; stopping after the current step", signal.Signals(signum).name)
            stop_event.set()

        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            previous[stop_signal] = signal.signal(stop_signal, request_stop)
    agent.recover()
    try:
        with AgentSession(agent) as session:
            LOGGER.info(
                "agent %s serving %s/%s",
                agent.config.node_id,
                agent.config.fleet,
                ",".join(agent.config.channels),
            )
            while not stop_event.is_set():
                try:
                    topic, payload = session.messages.get(timeout=0.2)
                except queue.Empty:
                    session.flush_reports()
                    continue
                session.process(topic, payload)
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
