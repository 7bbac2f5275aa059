"""A webhook receiver on loopback for the tests: verifies the HMAC and records events."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tensorguard.fleet.connectors import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify_webhook_signature,
)

MAX_SKEW_S = 300


@dataclass
class WebhookReceiver:
    """What the receiver saw: verified events, refused requests, and planned failures."""

    url: str
    secret: bytes
    fail_first: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    attempts: int = 0


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            del format, args

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.attempts += 1
            if receiver.attempts <= receiver.fail_first:
                self._answer(503)
                return
            timestamp = self.headers.get(TIMESTAMP_HEADER, "")
            signature = self.headers.get(SIGNATURE_HEADER, "")
            fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= MAX_SKEW_S
            if not fresh or not verify_webhook_signature(
                receiver.secret, timestamp, body, signature
            ):
                receiver.refused.append(signature)
                self._answer(401)
                return
            receiver.events.append(json.loads(body))
            self._answer(204)

    return Handler


@contextmanager
def running_webhook_receiver(secret: bytes, fail_first: int = 0) -> Iterator[WebhookReceiver]:
    """Serve on 127.0.0.1 and a free port in a thread; shut down afterwards."""
    receiver = WebhookReceiver("", secret, fail_first)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/tensorguard"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
