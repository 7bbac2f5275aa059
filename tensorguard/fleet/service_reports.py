"""The edge agent's reports to the fleet service: install outcomes and heartbeats.

When ``service_url`` is configured, every install report the agent publishes over MQTT
is also posted to the fleet service as a telemetry message (``installed_version``,
``install_outcome``), signed with the node's enrolled key through
:class:`~tensorguard.service.client.NodeClient`; and the agent sends a heartbeat when
it connects and then every ``heartbeat_interval_s``. The message id is derived from the
report, so a report posted again (after a lost answer or a restart) is stored once.
Messages the service could not take (unreachable, 5xx, 429 after the client's retries)
wait in order and are posted again at the first flush ``retry_interval_s`` later (so an
unreachable service does not stall the agent's loop); a message the service refuses
(4xx) is logged and dropped, since sending it again cannot succeed.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from tensorguard.fleet.messages import InstallReport
from tensorguard.service.client import FleetClientError, NodeClient

LOGGER = logging.getLogger(__name__)
DEFAULT_HEARTBEAT_INTERVAL_S = 60.0
DEFAULT_RETRY_INTERVAL_S = 30.0


def telemetry_message(report: InstallReport, installed_version: int | None) -> dict[str, Any]:
    """The telemetry fields of an install report; the message id is the report's digest."""
    identity = "\n".join(
        (
            report.fleet,
            report.channel,
            report.node_id,
            str(report.version),
            report.digest or "",
            report.outcome.value,
            report.timestamp.isoformat(),
        )
    )
    return {
        "message_id": "install-" + hashlib.sha256(identity.encode()).hexdigest()[:40],
        "sent_at": report.timestamp.isoformat(),
        "installed_version": installed_version,
        "install_outcome": report.outcome.value,
    }


def _retryable(error: FleetClientError) -> bool:
    return error.status is None or error.status >= 500 or error.status == 429


class ServiceReporter:
    """Queues install outcomes for the fleet service and sends heartbeats when due."""

    def __init__(
        self,
        client: NodeClient,
        *,
        heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S,
        retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.heartbeat_interval_s = heartbeat_interval_s
        self.retry_interval_s = retry_interval_s
        self._clock = clock
        self._last_heartbeat: float | None = None
        self._retry_at: float | None = None
        self._pending: deque[dict[str, Any]] = deque()

    def record(self, report: InstallReport, installed_version: int | None) -> None:
        """Queue ``report`` as a telemetry message and try to post what is waiting."""
        self._pending.append(telemetry_message(report, installed_version))
        self.flush(force=True)

    def flush(self, *, force: bool = False) -> None:
        """Post waiting messages in order; stop at the first one the service cannot take.

        After such a failure nothing is sent for ``retry_interval_s`` unless ``force``.
        """
        if not force and self._retry_at is not None and self._clock() < self._retry_at:
            return
        while self._pending:
            message = self._pending[0]
            try:
                self.client.post_telemetry(**message)
            except FleetClientError as error:
                if _retryable(error):
                    LOGGER.warning("install outcome not delivered to the service yet: %s", error)
                    self._retry_at = self._clock() + self.retry_interval_s
                    return
                LOGGER.error("the fleet service refused an install outcome (dropped): %s", error)
            self._pending.popleft()
        self._retry_at = None

    def heartbeat(self, installed_version: int | None, *, force: bool = False) -> bool:
        """Send a heartbeat if one is due (or ``force``); True when the service took it."""
        now = self._clock()
        due = self._last_heartbeat is None or now - self._last_heartbeat >= (
            self.heartbeat_interval_s
        )
        if not (due or force):
            return False
        self._last_heartbeat = now  # also after a failure: retry at the next interval
        try:
            self.client.heartbeat(installed_version)
        except FleetClientError as error:
            LOGGER.warning("heartbeat to the fleet service failed: %s", error)
            return False
        return True

    @property
    def pending(self) -> int:
        """How many install outcomes wait for the service."""
        return len(self._pending)
