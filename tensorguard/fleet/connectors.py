"""Integration connectors: one interface, real checks, never a made-up "connected".

Every connector has :meth:`Connector.validate_credentials` (refuses unusable settings
or credentials without contacting anything) and :meth:`Connector.health_check` (really
contacts the system and says what happened). Two kinds are real:

* ``mqtt`` — the fleet's MQTT broker (:class:`~tensorguard.fleet.mqtt.MqttSettings`);
  the health check opens an MQTT session and closes it;
* ``webhook`` — an outbound HTTP(S) POST of a JSON event with the header
  ``X-TensorGuard-Signature: sha256=<hex>``, the HMAC-SHA256 under the shared secret of
  ``<X-TensorGuard-Timestamp>.<body>``, retried with exponential backoff on connection
  errors and 5xx/429 answers; the health check delivers a ``tensorguard.ping`` event.

Any other kind is :class:`UnavailableConnector`: it reports ``unavailable`` with a
remediation message and never pretends to be connected. No web framework is imported.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from tensorguard.fleet.errors import FleetError, MqttError
from tensorguard.fleet.models import utc_now
from tensorguard.fleet.mqtt import MqttConnection, MqttSettings

SIGNATURE_HEADER = "X-TensorGuard-Signature"
TIMESTAMP_HEADER = "X-TensorGuard-Timestamp"
MIN_WEBHOOK_SECRET_BYTES = 32
REAL_KINDS = ("mqtt", "webhook")


class ConnectorError(FleetError):
    """A connector's settings or credentials are unusable."""


class ConnectorUnavailableError(ConnectorError):
    """No implementation exists for the connector's kind; the message says what to do."""


class ConnectorStatus(StrEnum):
    """What a health check found."""

    CONNECTED = "connected"
    FAILED = "failed"
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class ConnectorHealth:
    """The outcome of one health check, with when it ran and why it ended so."""

    status: ConnectorStatus
    detail: str
    checked_at: datetime = field(default_factory=utc_now)


class Connector(Protocol):
    """What every connector offers."""

    kind: str

    def validate_credentials(self) -> None:
        """Raise :class:`ConnectorError` unless settings and credentials are usable."""
        ...

    def health_check(self) -> ConnectorHealth:
        """Contact the system now and report what happened."""
        ...


def _parse(model: type[BaseModel], document: Mapping[str, Any], what: str) -> Any:
    try:
        return model.model_validate(dict(document))
    except ValidationError as exc:
        fields = ", ".join(
            ".".join(str(part) for part in error["loc"]) or "(root)" for error in exc.errors()
        )
        raise ConnectorError(f"{what} settings are invalid ({fields}); fix those fields") from None


class MqttConnector:
    """The fleet's MQTT broker; the health check is a real MQTT connect."""

    kind = "mqtt"

    def __init__(self, settings: MqttSettings, client_id: str = "tensorguard-connector") -> None:
        """Check ``settings`` against the broker under ``client_id``."""
        self.settings = settings
        self.client_id = client_id

    @classmethod
    def from_stored(
        cls, name: str, settings: Mapping[str, Any], credentials: str | None
    ) -> MqttConnector:
        """Build from stored settings (host, port, username, TLS files) and the password."""
        document = dict(settings)
        if credentials is not None:
            document["password"] = credentials
        parsed: MqttSettings = _parse(MqttSettings, document, "MQTT connector")
        return cls(parsed, client_id=f"tensorguard-connector-{name}")

    def validate_credentials(self) -> None:
        """A password needs a username (checked by :class:`MqttSettings`); TLS files exist."""
        for path in (self.settings.tls_ca_file, self.settings.tls_cert_file):
            if path is not None and not path.is_file():
                raise ConnectorError(f"MQTT TLS file {path} does not exist; fix the path")

    def health_check(self) -> ConnectorHealth:
        """Open an MQTT session with the broker and close it."""
        try:
            self.validate_credentials()
            with MqttConnection(self.settings, self.client_id):
                pass
        except (MqttError, ConnectorError) as exc:
            return ConnectorHealth(ConnectorStatus.FAILED, str(exc))
        return ConnectorHealth(
            ConnectorStatus.CONNECTED, f"MQTT broker at {self.settings.endpoint} accepted a session"
        )


class WebhookSettings(BaseModel):
    """Where the webhook posts and how hard it tries."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    url: Annotated[str, Field(min_length=8, max_length=2048)]
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 4
    backoff_s: Annotated[float, Field(ge=0, le=30)] = 0.5
    secret: SecretStr


def webhook_signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 under ``secret`` of ``timestamp``, ``.``, ``body``."""
    mac = hmac.new(secret, timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify_webhook_signature(secret: bytes, timestamp: str, body: bytes, header: str) -> bool:
    """True when ``header`` is the signature of ``timestamp`` and ``body`` (constant time)."""
    return hmac.compare_digest(webhook_signature(secret, timestamp, body), header)


class WebhookConnector:
    """An outbound, HMAC-signed HTTP(S) webhook with retries and backoff."""

    kind = "webhook"

    def __init__(
        self,
        settings: WebhookSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``sleep`` and ``clock`` are injectable for tests of the backoff and timestamps."""
        self.settings = settings
        self._sleep = sleep
        self._clock = clock

    @classmethod
    def from_stored(
        cls, name: str, settings: Mapping[str, Any], credentials: str | None
    ) -> WebhookConnector:
        """Build from stored settings (url, timeout, attempts, backoff) and the secret."""
        del name
        document = dict(settings) | {"secret": credentials or ""}
        parsed: WebhookSettings = _parse(WebhookSettings, document, "webhook connector")
        return cls(parsed)

    def validate_credentials(self) -> None:
        """The URL is plain http(s) with a host; the secret has at least 32 bytes."""
        parts = urlsplit(self.settings.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConnectorError("the webhook url must be http:// or https:// with a host")
        if parts.username or parts.password:
            raise ConnectorError("the webhook url must not carry credentials; use the secret")
        secret = self.settings.secret.get_secret_value().encode()
        if len(secret) < MIN_WEBHOOK_SECRET_BYTES:
            raise ConnectorError(
                f"the webhook secret has {len(secret)} bytes; use at least "
                f"{MIN_WEBHOOK_SECRET_BYTES} random bytes shared with the receiver"
            )

    def _post_once(self, body: bytes) -> int:
        timestamp = str(int(self._clock()))
        secret = self.settings.secret.get_secret_value().encode()
        request = urllib.request.Request(  # noqa: S310 (validate_credentials: http(s) only)
            self.settings.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: webhook_signature(secret, timestamp, body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:  # noqa: S310
                status: int = response.status
                return status
        except urllib.error.HTTPError as exc:
            return exc.code

    def deliver(self, event: Mapping[str, Any]) -> int:
        """POST ``event`` (JSON); retry connection errors, 429 and 5xx with backoff.

        Returns the final 2xx status; raises :class:`ConnectorError` naming the last
        answer when every attempt failed or the receiver refused (other 4xx, no retry).
        """
        self.validate_credentials()
        body = json.dumps(dict(event), sort_keys=True, separators=(",", ":")).encode()
        last = "no attempt"
        for attempt in range(1, self.settings.max_attempts + 1):
            try:
                status = self._post_once(body)
            except OSError as exc:
                last = f"connection failed: {getattr(exc, 'reason', exc)}"
            else:
                if 200 <= status < 300:
                    return status
                last = f"HTTP {status}"
                if status < 500 and status != 429:
                    raise ConnectorError(
                        f"the webhook receiver refused the event ({last}); check its URL and "
                        "that it holds the same secret"
                    )
            if attempt < self.settings.max_attempts:
                self._sleep(self.settings.backoff_s * 2 ** (attempt - 1))
        raise ConnectorError(
            f"the webhook was not delivered after {self.settings.max_attempts} attempts "
            f"(last: {last}); check that the receiver is up"
        )

    def health_check(self) -> ConnectorHealth:
        """Deliver a signed ``tensorguard.ping`` event."""
        try:
            status = self.deliver({"type": "tensorguard.ping", "sent_at": int(self._clock())})
        except ConnectorError as exc:
            return ConnectorHealth(ConnectorStatus.FAILED, str(exc))
        host = urlsplit(self.settings.url).hostname
        return ConnectorHealth(
            ConnectorStatus.CONNECTED, f"webhook at {host} accepted a signed ping (HTTP {status})"
        )


class UnavailableConnector:
    """A kind without an implementation: always ``unavailable``, with a remediation."""

    def __init__(self, kind: str) -> None:
        """A stand-in for ``kind`` that reports what to do instead."""
        self.kind = kind

    @property
    def remediation(self) -> str:
        """What an operator can do about it."""
        return (
            f"connector kind {self.kind!r} is not implemented in TensorGuard; available "
            f"kinds are {', '.join(REAL_KINDS)}: use a webhook to reach {self.kind!r} "
            "through a relay you run, or remove this connector"
        )

    def validate_credentials(self) -> None:
        """Always refused: nothing could use the credentials."""
        raise ConnectorUnavailableError(self.remediation)

    def health_check(self) -> ConnectorHealth:
        """Always ``unavailable``; never ``connected``."""
        return ConnectorHealth(ConnectorStatus.UNAVAILABLE, self.remediation)


def build_connector(
    name: str, kind: str, settings: Mapping[str, Any], credentials: str | None
) -> Connector:
    """The connector for ``kind`` from its stored settings and unsealed credentials."""
    if kind == MqttConnector.kind:
        return MqttConnector.from_stored(name, settings, credentials)
    if kind == WebhookConnector.kind:
        return WebhookConnector.from_stored(name, settings, credentials)
    return UnavailableConnector(kind)
