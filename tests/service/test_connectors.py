"""Integration connectors: a real webhook receiver and Mosquitto, sealed credentials."""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from tensorguard.fleet.connectors import (
    ConnectorError,
    ConnectorStatus,
    UnavailableConnector,
    WebhookConnector,
    WebhookSettings,
    build_connector,
)
from tensorguard.service.tokens import Role
from tests.service.fleet_server import FleetServer
from tests.service.webhook_receiver import running_webhook_receiver
from tests.services.mosquitto import MosquittoBroker


def _name() -> str:
    return f"conn-{uuid.uuid4().hex[:10]}"


def _create(server: FleetServer, body: dict[str, Any]) -> Any:
    return server.post_json("/v1/connectors", body, token=server.token())


def _check(server: FleetServer, name: str) -> Any:
    return server.post_json(f"/v1/connectors/{name}/check", {}, token=server.token())


def test_webhook_delivers_signed_events_with_retries() -> None:
    secret = secrets.token_hex(32)
    slept: list[float] = []
    with running_webhook_receiver(secret.encode(), fail_first=2) as receiver:
        settings = WebhookSettings(url=receiver.url, secret=SecretStr(secret), backoff_s=0.25)
        connector = WebhookConnector(settings, sleep=slept.append)
        connector.validate_credentials()
        assert connector.deliver({"type": "release.promoted", "version": 7}) == 204
    assert receiver.attempts == 3
    assert slept == [0.25, 0.5]  # exponential backoff between the attempts
    assert receiver.events == [{"type": "release.promoted", "version": 7}]
    assert receiver.refused == []


def test_webhook_with_the_wrong_secret_is_refused_by_the_receiver() -> None:
    with running_webhook_receiver(secrets.token_bytes(32)) as receiver:
        wrong = WebhookSettings(url=receiver.url, secret=SecretStr("x" * 40))
        health = WebhookConnector(wrong, sleep=lambda _s: None).health_check()
    assert health.status is ConnectorStatus.FAILED
    assert "refused the event (HTTP 401)" in health.detail
    assert len(receiver.refused) == 1
    assert receiver.events == []


def test_webhook_gives_up_after_its_attempts() -> None:
    with running_webhook_receiver(b"k" * 32, fail_first=10) as receiver:
        settings = WebhookSettings(url=receiver.url, secret=SecretStr("k" * 32), max_attempts=3)
        with pytest.raises(ConnectorError, match="after 3 attempts"):
            WebhookConnector(settings, sleep=lambda _s: None).deliver({"type": "x"})
    assert receiver.attempts == 3


@pytest.mark.parametrize(
    ("settings", "credentials", "problem"),
    [
        ({"url": "ftp://127.0.0.1/x"}, "s" * 32, "http:// or https://"),
        ({"url": "http://127.0.0.1/x"}, "short", "at least 32"),
        ({"url": "http://u:p@127.0.0.1/x"}, "s" * 32, "must not carry credentials"),
    ],
)
def test_webhook_settings_are_validated(
    settings: dict[str, Any], credentials: str, problem: str
) -> None:
    with pytest.raises(ConnectorError, match=problem):
        build_connector("hook", "webhook", settings, credentials).validate_credentials()


def test_other_kinds_are_unavailable_never_connected() -> None:
    connector = build_connector("erp", "sap-erp", {}, None)
    assert isinstance(connector, UnavailableConnector)
    health = connector.health_check()
    assert health.status is ConnectorStatus.UNAVAILABLE
    assert "not implemented" in health.detail
    with pytest.raises(ConnectorError):
        connector.validate_credentials()


def test_webhook_connector_on_the_service(fleet_server: FleetServer) -> None:
    secret = secrets.token_urlsafe(32)
    name = _name()
    with running_webhook_receiver(secret.encode()) as receiver:
        body = {"name": name, "kind": "webhook", "settings": {"url": receiver.url}}
        created = _create(fleet_server, body | {"credentials": secret})
        assert created.status_code == 201, created.text
        assert created.json()["has_credentials"] is True
        checked = _check(fleet_server, name)
    assert checked.status_code == 200, checked.text
    assert checked.json()["status"] == "connected"
    assert receiver.events[0]["type"] == "tensorguard.ping"
    listed = fleet_server.get("/v1/connectors", token=fleet_server.token())
    assert listed.status_code == 200
    [mine] = [c for c in listed.json() if c["name"] == name]
    assert mine["last_seen_at"] is not None
    assert mine["last_status"] == "connected"
    assert secret not in listed.text
    assert secret not in created.text
    assert secret not in checked.text
    if fleet_server.settings.database_url.startswith("sqlite:///"):
        path = fleet_server.settings.database_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as db:
            (stored,) = db.execute(
                "SELECT sealed_credentials FROM connectors WHERE name = ?", (name,)
            ).fetchone()
            dump = "\n".join(db.iterdump())
        assert stored.startswith("v1:")
        assert secret not in dump
    # the receiver is gone now: a failed check is 503 and keeps last_seen
    failed = _check(fleet_server, name)
    assert failed.status_code == 503
    assert failed.json()["status"] == "failed"
    assert failed.json()["last_seen_at"] == checked.json()["last_seen_at"]


def test_mqtt_connector_connects_to_the_broker(
    fleet_server: FleetServer, mosquitto_broker: MosquittoBroker
) -> None:
    name = _name()
    settings = {"host": mosquitto_broker.host, "port": mosquitto_broker.port, "timeout_s": 5}
    assert (
        _create(fleet_server, {"name": name, "kind": "mqtt", "settings": settings}).status_code
        == 201
    )
    checked = _check(fleet_server, name)
    assert checked.status_code == 200, checked.text
    assert checked.json()["status"] == "connected"
    dead = _name()
    closed = settings | {"port": 1}
    assert (
        _create(fleet_server, {"name": dead, "kind": "mqtt", "settings": closed}).status_code == 201
    )
    failed = _check(fleet_server, dead)
    assert failed.status_code == 503
    assert failed.json()["last_seen_at"] is None
    assert "cannot reach the MQTT broker" in failed.json()["detail"]


def test_unknown_kind_answers_424_and_routes_are_operator_only(fleet_server: FleetServer) -> None:
    name = _name()
    assert _create(fleet_server, {"name": name, "kind": "ros2-bridge"}).status_code == 201
    checked = _check(fleet_server, name)
    assert checked.status_code == 424
    assert checked.json()["status"] == "unavailable"
    assert "not implemented" in checked.json()["detail"]
    secret_in_settings = {"name": _name(), "kind": "webhook", "settings": {"secret": "x" * 40}}
    assert _create(fleet_server, secret_in_settings).status_code == 422
    auditor = fleet_server.token(Role.AUDITOR)
    assert fleet_server.get("/v1/connectors", token=auditor).status_code == 403
    assert fleet_server.get("/v1/connectors").status_code == 401
    assert _check(fleet_server, _name()).status_code == 404
