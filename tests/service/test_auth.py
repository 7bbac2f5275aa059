"""Authentication and authorisation of the live fleet service: every bypass is refused."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tensorguard.service.request_signing import public_key_hex, sign_request
from tensorguard.service.tokens import Role
from tests.service.fleet_server import SECRET, EdgeNode, FleetServer, telemetry_body

PUBLIC_PATHS = {"/healthz", "/readyz"}


def _claims(server: FleetServer, **overrides: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": server.settings.token_issuer,
        "aud": server.settings.token_audience,
        "sub": "mallory",
        "role": "operator",
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _forged(server: FleetServer, **overrides: object) -> str:
    return jwt.encode(_claims(server, **overrides), SECRET, algorithm="HS256")


def _unsigned(server: FleetServer) -> str:
    """An ``alg=none`` token with otherwise perfect claims."""
    return jwt.encode(_claims(server), None, algorithm="none")


def test_health_routes_are_public(fleet_server: FleetServer) -> None:
    assert fleet_server.get("/healthz").json()["status"] == "ok"
    assert fleet_server.get("/readyz").json()["status"] == "ok"


def test_every_other_route_refuses_a_request_without_credentials(
    fleet_server: FleetServer, node: EdgeNode
) -> None:
    paths = fleet_server.get("/openapi.json").json()["paths"]
    checked = 0
    for template, operations in paths.items():
        if template in PUBLIC_PATHS:
            continue
        path = template.replace("{node_id}", node.node_id).replace("{cohort}", node.cohort)
        for method in operations:
            response = (
                fleet_server.get(path)
                if method == "get"
                else fleet_server.post_json(path, {"installed_version": 1})
            )
            assert response.status_code == 401, (method, path, response.text)
            checked += 1
    assert checked >= 6


def test_valid_operator_token_is_accepted(fleet_server: FleetServer, node: EdgeNode) -> None:
    response = fleet_server.get(f"/v1/nodes/{node.node_id}", token=fleet_server.token())
    assert response.status_code == 200
    assert response.json()["cohort"] == node.cohort


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 3900}, "expired"),
        ({"aud": "some-other-service"}, "audience"),
        ({"iss": "someone-else"}, "issuer"),
        ({"nbf": int(time.time()) + 3600, "exp": int(time.time()) + 3900}, "not valid yet"),
        ({"jti": None}, "jti"),
        ({"exp": int(time.time()) + 30 * 86400}, "lifetime"),
        ({"role": "edge-node"}, "cannot authenticate with a token"),
        ({"role": "root"}, "role"),
    ],
    ids=["expired", "audience", "issuer", "nbf", "no-jti", "long-lived", "node-role", "bad-role"],
)
def test_bad_claims_are_refused(
    fleet_server: FleetServer, node: EdgeNode, overrides: dict[str, object], reason: str
) -> None:
    response = fleet_server.get(
        f"/v1/nodes/{node.node_id}", token=_forged(fleet_server, **overrides)
    )
    assert response.status_code == 401
    assert reason in response.json()["detail"]
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_alg_none_is_refused(fleet_server: FleetServer, node: EdgeNode) -> None:
    response = fleet_server.get(f"/v1/nodes/{node.node_id}", token=_unsigned(fleet_server))
    assert response.status_code == 401
    assert "algorithm" in response.json()["detail"]


def test_token_signed_with_another_key_is_refused(
    fleet_server: FleetServer, node: EdgeNode
) -> None:
    token = jwt.encode(_claims(fleet_server), "another-key-" * 4, algorithm="HS256")
    response = fleet_server.get(f"/v1/nodes/{node.node_id}", token=token)
    assert response.status_code == 401
    assert "signature" in response.json()["detail"]


def test_eddsa_token_is_refused(fleet_server: FleetServer, node: EdgeNode) -> None:
    """Algorithm confusion, EdDSA side: a token signed with a key the attacker holds."""
    token = jwt.encode(_claims(fleet_server), node.key, algorithm="EdDSA")
    response = fleet_server.get(f"/v1/nodes/{node.node_id}", token=token)
    assert response.status_code == 401
    assert "algorithm" in response.json()["detail"]


def test_hs256_keyed_with_a_public_key_is_refused(
    fleet_server: FleetServer, node: EdgeNode
) -> None:
    """Algorithm confusion, HS side: HMAC keyed with the node's (public) key bytes."""
    public_hex = public_key_hex(node.key.public_key())
    for key in (bytes.fromhex(public_hex), public_hex.encode()):
        token = jwt.encode(_claims(fleet_server), key, algorithm="HS256")
        response = fleet_server.get(f"/v1/nodes/{node.node_id}", token=token)
        assert response.status_code == 401


def test_wrong_role_is_forbidden(fleet_server: FleetServer) -> None:
    auditor = fleet_server.token(Role.AUDITOR, "audrey")
    response = fleet_server.post_json("/v1/nodes", EdgeNode.new().enrolment(), token=auditor)
    assert response.status_code == 403
    evaluator = fleet_server.token(Role.EVALUATOR, "eve")
    assert fleet_server.get("/v1/cohorts/canary/telemetry", token=evaluator).status_code == 403


def test_a_node_key_is_enrolled_once(fleet_server: FleetServer, node: EdgeNode) -> None:
    takeover = EdgeNode(node.node_id, node.cohort, Ed25519PrivateKey.generate())
    response = fleet_server.post_json("/v1/nodes", takeover.enrolment(), token=fleet_server.token())
    assert response.status_code == 409


def test_signed_request_is_accepted(fleet_server: FleetServer, node: EdgeNode) -> None:
    response = node.signed_post(fleet_server, f"/v1/nodes/{node.node_id}/heartbeat", b"{}")
    assert response.status_code == 200, response.text
    assert response.json()["last_seen_at"] is not None


def test_node_cannot_post_for_another_node(
    fleet_server: FleetServer, node: EdgeNode, other_node: EdgeNode
) -> None:
    path = f"/v1/nodes/{other_node.node_id}/telemetry"
    # Signed honestly as itself, for the other node's path: authenticated, not allowed.
    response = node.signed_post(fleet_server, path, telemetry_body())
    assert response.status_code == 403
    # Claiming to be the other node, with its own key: the signature does not verify.
    body = telemetry_body()
    forged = sign_request(node.key, other_node.node_id, "POST", path, body)
    assert node.signed_post(fleet_server, path, body, headers=forged).status_code == 401


def test_replayed_request_is_refused(fleet_server: FleetServer, node: EdgeNode) -> None:
    path = f"/v1/nodes/{node.node_id}/telemetry"
    body = telemetry_body()
    headers = sign_request(node.key, node.node_id, "POST", path, body)
    assert node.signed_post(fleet_server, path, body, headers=headers).status_code == 201
    replay = node.signed_post(fleet_server, path, body, headers=headers)
    assert replay.status_code == 401
    assert "replayed" in replay.json()["detail"]


def test_tampered_body_is_refused(fleet_server: FleetServer, node: EdgeNode) -> None:
    path = f"/v1/nodes/{node.node_id}/telemetry"
    body = telemetry_body(error_rate=0.9)
    tampered = body.replace(b"0.9", b"0.0")
    response = node.signed_post(fleet_server, path, body, send_body=tampered)
    assert response.status_code == 401
    assert "does not verify" in response.json()["detail"]


def test_stale_or_future_timestamp_is_refused(fleet_server: FleetServer, node: EdgeNode) -> None:
    path = f"/v1/nodes/{node.node_id}/heartbeat"
    window = fleet_server.settings.signature_window_s
    for skew in (-window - 60, window + 60):
        headers = sign_request(
            node.key, node.node_id, "POST", path, b"{}", timestamp=int(time.time()) + skew
        )
        response = node.signed_post(fleet_server, path, b"{}", headers=headers)
        assert response.status_code == 401
        assert "server clock" in response.json()["detail"]


def test_unknown_node_is_refused(fleet_server: FleetServer) -> None:
    stranger = EdgeNode.new()
    path = f"/v1/nodes/{stranger.node_id}/heartbeat"
    response = stranger.signed_post(fleet_server, path, b"{}")
    assert response.status_code == 401
    assert "not enrolled" in response.json()["detail"]


def test_missing_signature_headers_are_refused(fleet_server: FleetServer, node: EdgeNode) -> None:
    path = f"/v1/nodes/{node.node_id}/heartbeat"
    headers = sign_request(node.key, node.node_id, "POST", path, b"{}")
    del headers["X-TG-Signature"]
    assert node.signed_post(fleet_server, path, b"{}", headers=headers).status_code == 401


def test_a_bearer_token_does_not_open_node_routes(
    fleet_server: FleetServer, node: EdgeNode
) -> None:
    path = f"/v1/nodes/{node.node_id}/telemetry"
    response = fleet_server.post_json(path, {"message_id": "x" * 16}, token=fleet_server.token())
    assert response.status_code == 401


def test_revoked_token_is_refused(fleet_server: FleetServer, node: EdgeNode) -> None:
    path = f"/v1/nodes/{node.node_id}"
    leaked = fleet_server.token(Role.AUDITOR, "audrey")
    assert fleet_server.get(path, token=leaked).status_code == 200
    operator = fleet_server.token()
    response = fleet_server.post_json("/v1/tokens/revoke", {"token": leaked}, token=operator)
    assert response.status_code == 200, response.text
    assert response.json()["revoked"] is True
    refused = fleet_server.get(path, token=leaked)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["detail"]
    assert fleet_server.get(path, token=operator).status_code == 200  # others unaffected
    again = fleet_server.post_json("/v1/tokens/revoke", {"token": leaked}, token=operator)
    assert again.status_code == 200  # idempotent


def test_only_operators_revoke_and_only_valid_tokens(fleet_server: FleetServer) -> None:
    auditor = fleet_server.token(Role.AUDITOR, "audrey")
    victim = fleet_server.token()
    response = fleet_server.post_json("/v1/tokens/revoke", {"token": victim}, token=auditor)
    assert response.status_code == 403
    forged = _forged(fleet_server, aud="elsewhere")
    response = fleet_server.post_json(
        "/v1/tokens/revoke", {"token": forged}, token=fleet_server.token()
    )
    assert response.status_code == 400
    assert "audience" in response.json()["detail"]
