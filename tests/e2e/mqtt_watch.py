"""Watch a broker's topics with a plain paho client, independent of TensorGuard's wrapper."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.services.mosquitto import MosquittoBroker

SUBSCRIBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class SeenMessage:
    """One message as the broker delivered it."""

    topic: str
    payload: bytes
    retain: bool
    received_at: float


class TopicRecorder:
    """Subscribe to ``topic_filter`` (QoS 1) and record every message until closed.

    Entering returns only after the broker acknowledged the subscription, so nothing
    published afterwards can be missed.
    """

    def __init__(self, broker: MosquittoBroker, topic_filter: str) -> None:
        self.topic_filter = topic_filter
        self._broker = broker
        self._lock = threading.Lock()
        self._seen: list[SeenMessage] = []
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, *_: Any) -> None:
        client.subscribe(self.topic_filter, qos=1)

    def _on_subscribe(self, *_: Any) -> None:
        self._subscribed.set()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: Any) -> None:
        seen = SeenMessage(
            message.topic, bytes(message.payload), bool(message.retain), time.monotonic()
        )
        with self._lock:
            self._seen.append(seen)

    def __enter__(self) -> Self:
        self._client.connect(self._broker.host, self._broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(SUBSCRIBE_TIMEOUT_S):
            self.close()
            raise TimeoutError(f"no SUBACK for {self.topic_filter!r} in {SUBSCRIBE_TIMEOUT_S}s")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self._client.disconnect()
        self._client.loop_stop()

    @property
    def messages(self) -> list[SeenMessage]:
        """Every message received so far, in arrival order."""
        with self._lock:
            return list(self._seen)

    def wait_for_count(self, count: int, timeout: float) -> list[SeenMessage]:
        """Wait until at least ``count`` messages arrived or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages
