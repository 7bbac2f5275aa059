"""A small, blocking-where-it-matters wrapper over paho-mqtt 2.x (MQTT 5).

:class:`MqttConnection` connects and waits for the CONNACK, publishes and waits for
the PUBACK (QoS 1), subscribes and waits for the SUBACK, and raises
:class:`~tensorguard.fleet.errors.MqttError` with the broker address and the reason
whenever one of those does not happen in time. The paho network loop runs in a
background thread; it reconnects on its own and the wrapper re-subscribes after each
reconnect. Message handlers run on that thread and must return quickly (the edge
agent only queues what it receives).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from tensorguard.fleet.errors import MqttConfigError, MqttError
from tensorguard.gate.errors import validate_or_raise

LOGGER = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]

MQTT_PASSWORD_ENV = "TG_MQTT_PASSWORD"  # noqa: S105 - a variable name, not a credential
"""The environment variable that carries the MQTT password (pipeline and edge agent);
the password is never written to a configuration file or to Dagster config."""

# CONNACK reason codes that mean "who you are was not accepted" (MQTT 5, 3.2.2.2).
_CREDENTIAL_REFUSALS = frozenset({0x86, 0x87, 0x8C})


class MqttSettings(BaseModel):
    """Where the broker is and how to authenticate; the password never appears in repr.

    ``username``/``password`` authenticate against the broker's password file (the
    password comes from :data:`MQTT_PASSWORD_ENV`, see :meth:`with_password_from`).
    ``tls_ca_file`` turns TLS on and pins the broker's CA; ``tls_cert_file`` and
    ``tls_key_file`` (both or neither) add a client certificate for mutual TLS. A client
    certificate without ``tls_ca_file`` trusts the system's CA bundle for the broker.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    username: str | None = None
    password: SecretStr | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0

    @model_validator(mode="after")
    def _consistent_credentials(self) -> MqttSettings:
        if self.password is not None and self.username is None:
            raise ValueError(
                f"an MQTT password is set ({MQTT_PASSWORD_ENV}) but no username; set the "
                "username too (TG_MQTT_USERNAME for the pipeline, mqtt.username for an agent)"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError(
                "set both tls_cert_file and tls_key_file (the client certificate and its "
                "private key), or neither"
            )
        return self

    @property
    def endpoint(self) -> str:
        """``host:port`` for messages."""
        return f"{self.host}:{self.port}"

    @property
    def uses_tls(self) -> bool:
        """True when the connection is encrypted (a CA file or a client certificate)."""
        return self.tls_ca_file is not None or self.tls_cert_file is not None

    def with_password_from(self, environ: Mapping[str, str] | None = None) -> MqttSettings:
        """These settings with the password read from :data:`MQTT_PASSWORD_ENV` now.

        An unset or empty variable keeps the current password. Call this when a run or an
        agent session starts, so the password is never part of stored configuration.
        """
        value = (os.environ if environ is None else environ).get(MQTT_PASSWORD_ENV, "")
        if not value:
            return self
        if self.username is None:
            raise MqttConfigError(
                f"{MQTT_PASSWORD_ENV} is set but no MQTT username is configured; set "
                "TG_MQTT_USERNAME (pipeline) or mqtt.username (agent configuration)"
            )
        return self.model_copy(update={"password": SecretStr(value)})

    def credential_hint(self) -> str:
        """What to check when the broker refuses these credentials (never the password)."""
        if self.username is None:
            return (
                "no MQTT username is configured and the broker refuses anonymous clients; "
                "set TG_MQTT_USERNAME (pipeline) or mqtt.username (agent configuration) "
                f"and {MQTT_PASSWORD_ENV}"
            )
        if self.password is None:
            return (
                f"user {self.username!r} has no password: {MQTT_PASSWORD_ENV} is not set; "
                "set it to this user's password in the broker's password file"
            )
        return (
            f"the broker rejected user {self.username!r} with the password from "
            f"{MQTT_PASSWORD_ENV}; check both against the broker's password file and ACL"
        )


PIPELINE_MQTT_SETTINGS_HINT = (
    "Fix TG_MQTT_HOST, TG_MQTT_PORT, TG_MQTT_USERNAME, TG_MQTT_CA_FILE, "
    "TG_MQTT_CERT_FILE and TG_MQTT_KEY_FILE"
)


def pipeline_mqtt_settings(
    host: str,
    port: int,
    *,
    username: str = "",
    tls_ca_file: str = "",
    tls_cert_file: str = "",
    tls_key_file: str = "",
    environ: Mapping[str, str] | None = None,
) -> MqttSettings:
    """The pipeline's broker settings (``TG_MQTT_*``; empty strings mean unset), with the
    password read from :data:`MQTT_PASSWORD_ENV` in ``environ`` now.

    Raises :class:`MqttConfigError` naming every invalid setting (never the password).
    """
    settings = validate_or_raise(
        MqttSettings,
        {
            "host": host,
            "port": port,
            "username": username or None,
            "tls_ca_file": tls_ca_file or None,
            "tls_cert_file": tls_cert_file or None,
            "tls_key_file": tls_key_file or None,
        },
        MqttConfigError,
        "the pipeline's MQTT settings are invalid",
        PIPELINE_MQTT_SETTINGS_HINT,
    )
    return settings.with_password_from(environ)


class BrokerMessage(BaseModel):
    """A message given to the connection up front: a last will, or a birth message."""

    model_config = ConfigDict(frozen=True)

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


class _Acks:
    """Acknowledgements keyed by packet id, filled by the network thread."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._results: dict[int, list[ReasonCode]] = {}

    def record(self, mid: int, codes: list[ReasonCode]) -> None:
        with self._condition:
            self._results[mid] = codes
            self._condition.notify_all()

    def wait(self, mid: int, timeout: float) -> list[ReasonCode] | None:
        deadline = time.monotonic() + timeout
        with self._condition:
            while mid not in self._results:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._condition.wait(remaining)
            return self._results.pop(mid)

    def discard(self, mid: int) -> None:
        with self._condition:
            self._results.pop(mid, None)


class BrokerSession(ABC):
    """Something that connects to the broker on entry and disconnects on exit."""

    @abstractmethod
    def connect(self) -> None:
        """Connect (and subscribe, announce...); raise :class:`MqttError` on failure."""

    @abstractmethod
    def disconnect(self) -> None:
        """Leave the broker cleanly."""

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(self, *_: object) -> None:
        self.disconnect()


class MqttConnection(BrokerSession):
    """One MQTT 5 client session; use as a context manager (connect / disconnect)."""

    def __init__(
        self,
        settings: MqttSettings,
        client_id: str,
        *,
        will: BrokerMessage | None = None,
        birth: Callable[[], BrokerMessage] | None = None,
    ) -> None:
        """``will`` is published by the broker if this client vanishes; ``birth()`` makes
        the message the client publishes after every successful (re)connect, e.g. to
        restore an ``ONLINE`` state.
        """
        self.settings = settings
        self._birth = birth
        self.client_id = client_id
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self._client.connect_timeout = settings.timeout_s
        if settings.username is not None:
            password = settings.password.get_secret_value() if settings.password else None
            self._client.username_pw_set(settings.username, password)
        if settings.uses_tls:
            self._configure_tls(settings)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._connected = threading.Event()
        self._connack_received = threading.Event()
        self._connack: ReasonCode | None = None
        self._subscriptions: dict[str, tuple[int, MessageHandler]] = {}
        self._suback = _Acks()
        self._puback = _Acks()
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

    def _configure_tls(self, settings: MqttSettings) -> None:
        files = {
            "tls_ca_file": settings.tls_ca_file,
            "tls_cert_file": settings.tls_cert_file,
            "tls_key_file": settings.tls_key_file,
        }
        paths = {name: None if path is None else str(path) for name, path in files.items()}
        try:
            self._client.tls_set(
                ca_certs=paths["tls_ca_file"],
                certfile=paths["tls_cert_file"],
                keyfile=paths["tls_key_file"],
            )
        except (OSError, ssl.SSLError, ValueError) as exc:
            named = ", ".join(f"{name}={path}" for name, path in paths.items() if path)
            raise MqttConfigError(
                f"cannot load the MQTT TLS files ({named}): {exc}; check that each file "
                "exists, is readable and holds a PEM certificate or key"
            ) from exc

    def __repr__(self) -> str:
        return f"MqttConnection(endpoint={self.settings.endpoint!r}, client_id={self.client_id!r})"

    @property
    def is_connected(self) -> bool:
        """True while the broker has accepted this session."""
        return self._connected.is_set()

    def connect(self) -> None:
        """Open the session and wait for the broker's CONNACK."""
        endpoint = self.settings.endpoint
        try:
            self._client.connect(
                self.settings.host, self.settings.port, keepalive=self.settings.keepalive_s
            )
        except (OSError, ValueError) as exc:
            raise MqttError(
                f"cannot reach the MQTT broker at {endpoint}: {exc}; check that the broker "
                "is running and that the configured host and port are right"
            ) from exc
        self._client.loop_start()
        if not self._connack_received.wait(self.settings.timeout_s):
            self._stop_loop()
            raise MqttError(
                f"the MQTT broker at {endpoint} did not acknowledge the connection within "
                f"{self.settings.timeout_s:g}s"
            )
        refusal = self._connack
        if refusal is not None and refusal.is_failure:
            self._client.disconnect()
            self._stop_loop()
            hint = (
                self.settings.credential_hint()
                if refusal.value in _CREDENTIAL_REFUSALS
                else "check the client credentials and the broker's access rules"
            )
            raise MqttError(
                f"the MQTT broker at {endpoint} refused the connection: {refusal}; {hint}"
            )

    def disconnect(self) -> None:
        """Close the session cleanly and stop the network thread."""
        self._client.disconnect()
        self._stop_loop()

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and, for QoS 1 and 2, wait until the broker acknowledges it."""
        endpoint = self.settings.endpoint
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        try:
            info.wait_for_publish(self.settings.timeout_s)
        except (RuntimeError, ValueError) as exc:
            self._puback.discard(info.mid)
            raise MqttError(
                f"publishing to {topic!r} on {endpoint} failed: {exc}; check the broker connection"
            ) from exc
        if not info.is_published():
            self._puback.discard(info.mid)
            raise MqttError(
                f"the MQTT broker at {endpoint} did not acknowledge the message on {topic!r} "
                f"within {self.settings.timeout_s:g}s; it is unreachable or overloaded"
            )
        codes = self._puback.wait(info.mid, self.settings.timeout_s)
        if codes and codes[0].is_failure:
            raise MqttError(
                f"the MQTT broker at {endpoint} refused the message on {topic!r}: {codes[0]}; "
                "check the broker's access rules for this client"
            )

    def subscribe(self, topic_filter: str, handler: MessageHandler, *, qos: int = 1) -> None:
        """Subscribe (again after every reconnect) and wait for the SUBACK."""
        self._subscriptions[topic_filter] = (qos, handler)
        result, mid = self._client.subscribe(topic_filter, qos=qos)
        if result != paho.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(
                f"cannot subscribe to {topic_filter!r} on {self.settings.endpoint}: "
                f"{paho.error_string(result)}"
            )
        codes = self._suback.wait(mid, self.settings.timeout_s)
        if codes is None:
            raise MqttError(
                f"the MQTT broker at {self.settings.endpoint} did not acknowledge the "
                f"subscription to {topic_filter!r} within {self.settings.timeout_s:g}s"
            )
        if any(code.is_failure for code in codes):
            raise MqttError(
                f"the MQTT broker at {self.settings.endpoint} refused the subscription to "
                f"{topic_filter!r}: {', '.join(str(code) for code in codes)}"
            )

    def connect_subscribed(
        self, topic_filters: Sequence[str], handler: MessageHandler, *, qos: int = 1
    ) -> None:
        """Connect, then subscribe ``handler`` to each filter; if a subscription fails,
        disconnect again and re-raise, so no half-subscribed session is left behind."""
        self.connect()
        try:
            for topic_filter in topic_filters:
                self.subscribe(topic_filter, handler, qos=qos)
        except MqttError:
            self.disconnect()
            raise

    def _stop_loop(self) -> None:
        self._client.loop_stop()
        self._connected.clear()

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        del userdata, flags, properties  # paho's callback signature
        self._connack = reason_code
        self._connack_received.set()
        if reason_code.is_failure:
            LOGGER.error(
                "MQTT broker %s refused connection: %s", self.settings.endpoint, reason_code
            )
            return
        for topic_filter, (qos, _handler) in list(self._subscriptions.items()):
            client.subscribe(topic_filter, qos=qos)
        if self._birth is not None:
            birth = self._birth()
            client.publish(birth.topic, birth.payload, qos=birth.qos, retain=birth.retain)
        self._connected.set()

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        del client, userdata, flags, properties  # paho's callback signature
        if self._connected.is_set() and reason_code.is_failure:
            LOGGER.warning(
                "lost the MQTT broker at %s (%s); reconnecting", self.settings.endpoint, reason_code
            )
        self._connected.clear()

    def _on_subscribe(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Any,
    ) -> None:
        del client, userdata, properties  # paho's callback signature
        self._suback.record(mid, reason_codes)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Any,
    ) -> None:
        del client, userdata, properties  # paho's callback signature
        self._puback.record(mid, [reason_code])

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        del client, userdata  # paho's callback signature
        for topic_filter, (_qos, handler) in list(self._subscriptions.items()):
            if paho.topic_matches_sub(topic_filter, message.topic):
                try:
                    handler(message.topic, bytes(message.payload))
                except Exception:
                    LOGGER.exception("handler for %s failed on %s", topic_filter, message.topic)
