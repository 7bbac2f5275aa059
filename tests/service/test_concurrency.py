"""Races on the live service: a nonce and a message id are each accepted exactly once."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from tensorguard.service.request_signing import sign_request
from tests.service.fleet_server import EdgeNode, FleetServer, telemetry_body

PARALLEL = 8


def test_one_signed_request_sent_in_parallel_is_accepted_once(
    fleet_server: FleetServer, node: EdgeNode
) -> None:
    path = f"/v1/nodes/{node.node_id}/telemetry"
    body = telemetry_body()
    headers = sign_request(node.key, node.node_id, "POST", path, body)
    with ThreadPoolExecutor(PARALLEL) as pool:
        statuses = Counter(
            pool.map(
                lambda _: node.signed_post(fleet_server, path, body, headers=headers).status_code,
                range(PARALLEL),
            )
        )
    assert statuses == Counter({201: 1, 401: PARALLEL - 1})
    assert fleet_server.telemetry_summary(node.node_id)["samples"] == 1


def test_parallel_retries_of_one_message_are_stored_once(
    fleet_server: FleetServer, node: EdgeNode
) -> None:
    path = f"/v1/nodes/{node.node_id}/telemetry"
    body = telemetry_body(message_id=f"retry-{uuid.uuid4().hex}", safety_events=1)
    with ThreadPoolExecutor(PARALLEL) as pool:
        statuses = Counter(
            pool.map(
                lambda _: node.signed_post(fleet_server, path, body).status_code, range(PARALLEL)
            )
        )
    assert statuses == Counter({201: 1, 200: PARALLEL - 1})
    summary = fleet_server.telemetry_summary(node.node_id)
    assert summary["samples"] == 1
    assert summary["safety_events"] == 1
