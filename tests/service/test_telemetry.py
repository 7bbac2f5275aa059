"""Telemetry on the live service: real samples only, 503 when none, idempotent ingest."""

from __future__ import annotations

import uuid

import pytest

from tests.service.conftest import enrol
from tests.service.fleet_server import EdgeNode, FleetServer, telemetry_body


def _read(server: FleetServer, path: str) -> tuple[int, dict[str, object]]:
    response = server.get(path, token=server.token())
    return response.status_code, response.json()


def test_no_telemetry_is_503_with_a_reason(fleet_server: FleetServer) -> None:
    node = enrol(fleet_server, EdgeNode.new(cohort=f"quiet-{uuid.uuid4().hex[:8]}"))
    for path in (f"/v1/nodes/{node.node_id}/telemetry", f"/v1/cohorts/{node.cohort}/telemetry"):
        status, body = _read(fleet_server, path)
        assert status == 503, body
        assert "no telemetry" in str(body["detail"])
        assert set(body) == {"detail"}  # no numbers of any kind


def test_heartbeat_alone_is_not_telemetry(fleet_server: FleetServer, node: EdgeNode) -> None:
    path = f"/v1/nodes/{node.node_id}/heartbeat"
    response = node.signed_post(fleet_server, path, b'{"installed_version": 4}')
    assert response.status_code == 200
    assert response.json()["installed_version"] == 4
    status, _ = _read(fleet_server, f"/v1/nodes/{node.node_id}/telemetry")
    assert status == 503


def test_posted_telemetry_is_summarised(fleet_server: FleetServer) -> None:
    cohort = f"c-{uuid.uuid4().hex[:8]}"
    first, second = (enrol(fleet_server, EdgeNode.new(cohort=cohort)) for _ in range(2))
    readings = [
        (first, {"inference_latency_ms": 10.0, "error_rate": 0.02, "safety_events": 1}),
        (first, {"inference_latency_ms": 30.0, "error_rate": 0.04, "safety_events": 0}),
        (second, {"inference_latency_ms": 50.0, "error_rate": 0.0, "install_outcome": "failed"}),
    ]
    for node, fields in readings:
        path = f"/v1/nodes/{node.node_id}/telemetry"
        response = node.signed_post(fleet_server, path, telemetry_body(**fields))
        assert response.status_code == 201, response.text
        assert response.json()["stored"] is True

    status, node_summary = _read(fleet_server, f"/v1/nodes/{first.node_id}/telemetry")
    assert status == 200
    assert node_summary["samples"] == 2
    assert node_summary["mean_inference_latency_ms"] == pytest.approx(20.0)
    assert node_summary["max_error_rate"] == pytest.approx(0.04)
    assert node_summary["safety_events"] == 1

    status, cohort_summary = _read(fleet_server, f"/v1/cohorts/{cohort}/telemetry")
    assert status == 200
    assert cohort_summary["samples"] == 3
    assert cohort_summary["nodes_reporting"] == 2
    assert cohort_summary["nodes_enrolled"] == 2
    assert cohort_summary["max_inference_latency_ms"] == pytest.approx(50.0)
    assert cohort_summary["install_failures"] == 1

    status, node_view = _read(fleet_server, f"/v1/nodes/{first.node_id}")
    assert node_view["last_seen_at"] is not None
    assert node_view["installed_version"] == 3


def test_retried_message_is_stored_once(fleet_server: FleetServer, node: EdgeNode) -> None:
    path = f"/v1/nodes/{node.node_id}/telemetry"
    body = telemetry_body(message_id=f"msg-{uuid.uuid4().hex}", safety_events=2)
    first = node.signed_post(fleet_server, path, body)
    assert first.status_code == 201
    # The agent retries the same message (a new signature and nonce: not a replay).
    retry = node.signed_post(fleet_server, path, body)
    assert retry.status_code == 200, retry.text
    assert retry.json() == {
        "message_id": first.json()["message_id"],
        "stored": False,
        "duplicate": True,
    }
    status, summary = _read(fleet_server, f"/v1/nodes/{node.node_id}/telemetry")
    assert status == 200
    assert summary["samples"] == 1
    assert summary["safety_events"] == 2


def test_same_message_id_from_two_nodes_counts_twice(
    fleet_server: FleetServer, node: EdgeNode, other_node: EdgeNode
) -> None:
    body = telemetry_body(message_id="shared-message-id")
    for sender in (node, other_node):
        path = f"/v1/nodes/{sender.node_id}/telemetry"
        assert sender.signed_post(fleet_server, path, body).status_code == 201


def test_unknown_node_or_cohort_is_404(fleet_server: FleetServer) -> None:
    assert _read(fleet_server, "/v1/nodes/no-such-node/telemetry")[0] == 404
    assert _read(fleet_server, "/v1/cohorts/no-such-cohort/telemetry")[0] == 404


@pytest.mark.parametrize(
    "fields",
    [
        {"error_rate": 1.5},
        {"inference_latency_ms": -1},
        {"sent_at": "2026-01-01T00:00:00"},  # no time zone
        {"unexpected": 1},
        {"install_outcome": "maybe"},
    ],
)
def test_invalid_telemetry_is_422(
    fleet_server: FleetServer, node: EdgeNode, fields: dict[str, object]
) -> None:
    path = f"/v1/nodes/{node.node_id}/telemetry"
    assert node.signed_post(fleet_server, path, telemetry_body(**fields)).status_code == 422
