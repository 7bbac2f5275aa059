"""A real ``tensorguard serve`` process for the tests, and a small client for it.

The server runs from the installed code (``python -m tensorguard serve --migrate``) on
127.0.0.1 and a free port, with a temporary SQLite database, and is stopped by PID.
The client sends exactly the bytes it signs, so tests can tamper with one part.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tensorguard.service.request_signing import public_key_hex, sign_request
from tensorguard.service.settings import ServiceSettings, load_settings
from tensorguard.service.tokens import Role, issue_token
from tests.services.process import ServiceProcess, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
SECRET = "fleet-service-test-secret-" + "k" * 24  # 50 bytes; never a real secret


def child_env(extra: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process: the caller's, minus TG_* and DATABASE_URL."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TG_") and k != "DATABASE_URL"}
    env.update(extra)
    return env


@dataclass
class FleetServer:
    """A running fleet service and what a test needs to talk to it."""

    url: str
    settings: ServiceSettings
    process: ServiceProcess
    verify: bool | str = True  # requests' verify: the CA file of an https server

    def token(self, role: Role = Role.OPERATOR, subject: str = "alice") -> str:
        """A valid token for ``role``."""
        return issue_token(self.settings, subject, role, lifetime_s=600)

    def get(self, path: str, token: str | None = None, **kwargs: Any) -> requests.Response:
        """GET ``path``, with a bearer token when given."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("verify", self.verify)
        return requests.get(self.url + path, headers=headers, timeout=10, **kwargs)

    def post_json(self, path: str, body: object, token: str | None = None) -> requests.Response:
        """POST a JSON body, with a bearer token when given."""
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.post(
            self.url + path, data=json.dumps(body), headers=headers, timeout=10, verify=self.verify
        )

    def telemetry_summary(self, node_id: str) -> dict[str, object]:
        """The node's telemetry summary (an operator read); fail the test unless 200."""
        response = self.get(f"/v1/nodes/{node_id}/telemetry", token=self.token())
        assert response.status_code == 200, response.text
        summary: dict[str, object] = response.json()
        return summary

    def log(self) -> str:
        """Everything the server logged so far."""
        return self.process.log_path.read_text(errors="replace")


@dataclass
class EdgeNode:
    """A test edge node: its id, cohort and request-signing key."""

    node_id: str
    cohort: str
    key: Ed25519PrivateKey

    @classmethod
    def new(cls, cohort: str = "canary") -> EdgeNode:
        """A node with a fresh key and a unique id."""
        return cls(f"robot-{uuid.uuid4().hex[:10]}", cohort, Ed25519PrivateKey.generate())

    def enrolment(self) -> dict[str, str]:
        """The enrolment request body for this node."""
        return {
            "node_id": self.node_id,
            "fleet": "plant-a",
            "channel": "stable",
            "cohort": self.cohort,
            "public_key": public_key_hex(self.key.public_key()),
        }

    def signed_post(
        self,
        server: FleetServer,
        path: str,
        body: bytes,
        *,
        headers: dict[str, str] | None = None,
        send_body: bytes | None = None,
    ) -> requests.Response:
        """POST ``body`` signed by this node (``send_body`` replaces what is sent)."""
        signed = headers or sign_request(self.key, self.node_id, "POST", path, body)
        return requests.post(
            server.url + path,
            data=body if send_body is None else send_body,
            headers={"Content-Type": "application/json", **signed},
            timeout=10,
        )


def telemetry_body(message_id: str | None = None, **fields: object) -> bytes:
    """A telemetry message as an agent would send it."""
    message: dict[str, object] = {
        "message_id": message_id or uuid.uuid4().hex,
        "sent_at": datetime.now(UTC).isoformat(),
        "installed_version": 3,
        "install_outcome": "installed",
        "inference_latency_ms": 12.5,
        "error_rate": 0.01,
        "safety_events": 0,
        "cpu_percent": 35.0,
        "memory_mb": 512.0,
    }
    message.update(fields)
    return json.dumps(message).encode()


@contextmanager
def running_fleet_server(
    tmp: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    tls_ca_file: Path | None = None,
    extra_args: Sequence[str] = (),
) -> Iterator[FleetServer]:
    """Start ``tensorguard serve`` with a fresh SQLite database; stop it by PID afterwards.

    With ``tls_ca_file`` the server is expected to listen with HTTPS (``TG_TLS_*`` in
    ``extra_env``) under a certificate that CA file verifies. ``extra_args`` go on the
    ``serve`` command line.
    """
    port = free_port()
    database_url = f"sqlite:///{tmp / 'fleet.db'}"
    env = {"TG_SECRET_KEY": SECRET, "DATABASE_URL": database_url, **(extra_env or {})}
    process = ServiceProcess(
        "tensorguard serve",
        [
            sys.executable,
            "-m",
            "tensorguard",
            "serve",
            "--migrate",
            "--port",
            str(port),
            *extra_args,
        ],
        tmp / "serve.log",
        env=child_env(env),
    )
    process.start()
    url = f"{'https' if tls_ca_file else 'http'}://127.0.0.1:{port}"
    verify: bool | str = str(tls_ca_file) if tls_ca_file else True

    def ready() -> bool:
        try:
            return requests.get(url + "/healthz", timeout=1, verify=verify).status_code == 200
        except requests.ConnectionError:
            return False

    try:
        process.wait_until(ready, timeout=60)
        yield FleetServer(url, load_settings(env), process, verify)
    finally:
        process.stop()


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    """Poll ``predicate()`` until true (for log lines written asynchronously)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)
