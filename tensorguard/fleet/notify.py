"""Fleet notifications over MQTT: announce releases, publish and collect install reports.

* :func:`announce_release` (server side) publishes a
  :class:`~tensorguard.fleet.messages.ReleaseAnnouncement` on the channel's release
  topic, QoS 1, retained, and returns only after the broker acknowledged it.
* :func:`publish_install_report` (edge side) publishes a node's
  :class:`~tensorguard.fleet.messages.InstallReport`, QoS 1, retained per node.
* :class:`InstallReportListener` (server side) subscribes to a fleet's install reports
  and hands them out as they arrive, e.g. to store them with
  :meth:`tensorguard.fleet.db.FleetDatabase.record_install_report`.
"""

from __future__ import annotations

import logging
import queue
import secrets
import time

from tensorguard.fleet.errors import MqttError
from tensorguard.fleet.messages import InstallReport, MessageError, ReleaseAnnouncement
from tensorguard.fleet.mqtt import BrokerSession, MqttConnection, MqttSettings
from tensorguard.fleet.registry import LocalRegistry, ReleaseRecord
from tensorguard.fleet.topics import install_report_filter, install_report_topic, release_topic
from tensorguard.service.client import service_base_url

LOGGER = logging.getLogger(__name__)


SERVICE_URL_ENV = "TG_FLEET_SERVICE_URL"
"""The fleet service (``tensorguard serve``) whose URL release announcements carry."""


def package_location(
    registry: LocalRegistry, record: ReleaseRecord, service_url: str | None = None
) -> str:
    """Where nodes fetch a release: ``<service_url>/v1/packages/<channel>/<version>`` on
    the fleet service when one is given, else the registry's ``file://`` URI."""
    if not service_url:
        return registry.location(record)
    base = service_base_url(service_url)
    return f"{base}/v1/packages/{record.channel}/{record.version}"


def announcement_for(
    registry: LocalRegistry,
    record: ReleaseRecord,
    fleet: str,
    *,
    gate_decision_digest: str | None = None,
    service_url: str | None = None,
) -> ReleaseAnnouncement:
    """The announcement of a registry release: its location (see :func:`package_location`),
    digest, size and the channel's signed freshness statement when the registry has one."""
    freshness = registry.freshness_document(record.channel)
    return ReleaseAnnouncement(
        fleet=fleet,
        channel=record.channel,
        version=record.version,
        digest=record.digest,
        size=record.size,
        location=package_location(registry, record, service_url),
        created=record.published_at,
        gate_decision_digest=gate_decision_digest,
        freshness=None if freshness is None else freshness.decode("utf-8"),
    )


def announce_release(
    settings: MqttSettings, announcement: ReleaseAnnouncement, *, client_id: str | None = None
) -> str:
    """Publish ``announcement`` (QoS 1, retained); return the topic once the broker has it.

    Raises :class:`MqttError` if the broker cannot be reached or does not acknowledge.
    """
    topic = release_topic(announcement.fleet, announcement.channel)
    identity = client_id or f"tensorguard-release-{secrets.token_hex(4)}"
    with MqttConnection(settings, identity) as connection:
        connection.publish(topic, announcement.to_payload(), qos=1, retain=True)
    LOGGER.info(
        "announced %s/%s version %d on %s",
        announcement.fleet,
        announcement.channel,
        announcement.version,
        topic,
    )
    return topic


def publish_install_report(connection: MqttConnection, report: InstallReport) -> str:
    """Publish a node's install report (QoS 1, retained per node); return the topic."""
    topic = install_report_topic(report.fleet, report.channel, report.node_id)
    connection.publish(topic, report.to_payload(), qos=1, retain=True)
    return topic


class InstallReportListener(BrokerSession):
    """Subscribe to a fleet's install reports and collect them as they arrive."""

    def __init__(
        self,
        settings: MqttSettings,
        fleet: str,
        channel: str | None = None,
        *,
        client_id: str | None = None,
    ) -> None:
        self.topic_filter = install_report_filter(fleet, channel)
        self._connection = MqttConnection(
            settings, client_id or f"tensorguard-reports-{secrets.token_hex(4)}"
        )
        self._reports: queue.Queue[InstallReport] = queue.Queue()

    def connect(self) -> None:
        """Connect and subscribe to the fleet's install reports."""
        self._connection.connect_subscribed([self.topic_filter], self._receive)

    def disconnect(self) -> None:
        """Stop listening."""
        self._connection.disconnect()

    def _receive(self, topic: str, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            report = InstallReport.from_payload(payload)
        except MessageError as exc:
            LOGGER.warning("ignoring an invalid install report on %s: %s", topic, exc)
            return
        if topic != install_report_topic(report.fleet, report.channel, report.node_id):
            LOGGER.warning("ignoring an install report whose topic %s does not match it", topic)
            return
        self._reports.put(report)

    def next_report(self, timeout: float) -> InstallReport:
        """The next report received; raise :class:`MqttError` if none arrives in time."""
        try:
            return self._reports.get(timeout=timeout)
        except queue.Empty:
            raise MqttError(
                f"no install report on {self.topic_filter!r} within {timeout:g}s"
            ) from None

    def wait_for(self, node_id: str, version: int, timeout: float) -> InstallReport:
        """Wait for ``node_id``'s report about ``version``, skipping older reports."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise MqttError(
                    f"node {node_id!r} did not report on version {version} within {timeout:g}s"
                )
            report = self.next_report(remaining)
            if report.node_id == node_id and report.version == version:
                return report
