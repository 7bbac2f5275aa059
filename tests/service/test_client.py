"""The node-side client against the live service: signed posts, idempotent retries."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tensorguard.service import client as client_module
from tensorguard.service.client import FleetClientError, NodeClient
from tests.service.conftest import enrol
from tests.service.fleet_server import EdgeNode, FleetServer, running_fleet_server
from tests.services.process import free_port


@pytest.fixture
def client_waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The client's retry waits, in order (each still sleeps for real)."""
    waits: list[float] = []
    real_sleep = time.sleep

    def recording_sleep(seconds: float) -> None:
        waits.append(seconds)
        real_sleep(seconds)

    # Only the client module's view of ``time`` changes; the server threads keep theirs.
    monkeypatch.setattr(client_module, "time", SimpleNamespace(sleep=recording_sleep))
    return waits


def _client(server: FleetServer, node: EdgeNode, backoff_s: float = 0.5) -> NodeClient:
    return NodeClient(server.url, node.node_id, node.key, backoff_s=backoff_s)


def test_heartbeat_and_telemetry(fleet_server: FleetServer, node: EdgeNode) -> None:
    client = _client(fleet_server, node)
    record = client.heartbeat(installed_version=7)
    assert record["node_id"] == node.node_id
    assert record["installed_version"] == 7
    message_id = f"m-{uuid.uuid4().hex}"
    assert client.post_telemetry(message_id=message_id, error_rate=0.25) is True
    assert client.post_telemetry(message_id=message_id, error_rate=0.25) is False
    summary = fleet_server.get(
        f"/v1/nodes/{node.node_id}/telemetry", token=fleet_server.token()
    ).json()
    assert summary["samples"] == 1
    assert summary["max_error_rate"] == pytest.approx(0.25)


def test_refusals_are_not_retried(
    fleet_server: FleetServer, node: EdgeNode, client_waits: list[float]
) -> None:
    impostor = NodeClient(fleet_server.url, node.node_id, Ed25519PrivateKey.generate(), backoff_s=5)
    with pytest.raises(FleetClientError) as excinfo:
        impostor.heartbeat()
    assert excinfo.value.status == 401
    assert "does not verify" in str(excinfo.value)
    assert client_waits == []  # no back-off, no second attempt


def test_unreachable_service_fails_after_the_attempts() -> None:
    client = NodeClient(
        f"http://127.0.0.1:{free_port()}", "robot-1", Ed25519PrivateKey.generate(), backoff_s=0.01
    )
    with pytest.raises(FleetClientError, match="after 3 attempts: unreachable"):
        client.heartbeat()


@pytest.mark.parametrize(
    "url", ["ftp://fleet", "file:///tmp/x", "http://", "https://fleet/prefix", "http://h/?q=1"]
)
def test_only_plain_http_urls(url: str) -> None:
    with pytest.raises(FleetClientError, match="http"):
        NodeClient(url, "robot-1", Ed25519PrivateKey.generate())


def test_rate_limited_post_is_retried_once_stored_once(
    tmp_path: Path, client_waits: list[float]
) -> None:
    env = {"TG_RATE_LIMIT_PER_MINUTE": "60", "TG_RATE_LIMIT_BURST": "2"}
    with running_fleet_server(tmp_path, env) as server:
        node = enrol(server, EdgeNode.new())  # uses one token from the bucket
        client = _client(server, node, backoff_s=0.01)
        assert client.post_telemetry(message_id="first-message") is True  # the second
        assert client.post_telemetry(message_id="second-message") is True  # 429, then stored
        assert len(client_waits) == 1  # one retry, after the Retry-After wait
        assert client_waits[0] >= 1  # the server's Retry-After, not the 0.01 s back-off
        time.sleep(1.1)
        summary = server.get(f"/v1/nodes/{node.node_id}/telemetry", token=server.token())
        assert summary.status_code == 200, summary.text
        assert summary.json()["samples"] == 2
