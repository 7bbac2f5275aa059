"""``tensorguard serve`` and ``tensorguard token`` as a user runs them."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tensorguard.cli.exit_codes import ExitCode
from tests.service.fleet_server import (
    REPO_ROOT,
    SECRET,
    FleetServer,
    child_env,
    running_fleet_server,
)


def _tensorguard(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tensorguard", *args],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=child_env(env),
        timeout=timeout,
        check=False,
    )


def _serve(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` on an unmigrated database: it never gets as far as listening."""
    url = f"sqlite:///{tmp_path / 'fleet.db'}"
    return _tensorguard("serve", "--port", "1", "--database-url", url, env=env)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "TG_SECRET_KEY is not set"),
        ({"TG_SECRET_KEY": "x" * 31}, "TG_SECRET_KEY is shorter than 32 bytes"),
        ({"TG_SECRET_KEY": "é" * 15}, "TG_SECRET_KEY is shorter than 32 bytes"),  # 30 bytes
        ({"TG_SECRET_KEY": SECRET, "TG_DEMO_MODE": "true"}, "TG_DEMO_MODE is enabled"),
        ({"TG_SECRET_KEY": SECRET}, "TG_TLS_CLIENT_CA_FILE (the fleet CA's ca-bundle.pem)"),
    ],
    ids=["no-secret", "short-secret", "short-in-bytes", "demo-mode", "no-mutual-tls"],
)
def test_production_start_is_refused(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    result = _serve(tmp_path, {"TG_ENVIRONMENT": "production", **env})
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "production" in result.stderr
    assert expected in result.stderr
    secret = env.get("TG_SECRET_KEY")
    if secret:
        assert secret not in result.stderr + result.stdout
    assert not (tmp_path / "fleet.db").exists()  # refused before touching the database


def test_production_with_its_requirements_gets_past_the_gate(tmp_path: Path) -> None:
    env = {"TG_ENVIRONMENT": "production", "TG_SECRET_KEY": SECRET, "TG_NODE_AUTH": "signature"}
    result = _serve(tmp_path, env)
    # The settings pass (node routes without mutual TLS only because TG_NODE_AUTH says
    # so); the unmigrated database is the next refusal (exit 1, not 3).
    assert result.returncode == ExitCode.ERROR, result.stderr
    assert "--migrate" in result.stderr
    assert SECRET not in result.stderr + result.stdout


def test_development_generates_a_secret_and_says_so(tmp_path: Path) -> None:
    result = _serve(tmp_path, {})
    assert "development only" in result.stderr
    # The generated key (48 random bytes, base64url: 64 characters) is never printed.
    assert re.search(r"[A-Za-z0-9_-]{64}", result.stderr + result.stdout) is None
    assert result.returncode == ExitCode.ERROR  # unmigrated database
    assert "not migrated" in result.stderr or "schema revision" in result.stderr


def test_token_command_issues_a_token_the_server_accepts(fleet_server: FleetServer) -> None:
    result = _tensorguard(
        "token", "--role", "auditor", "--subject", "audrey", env={"TG_SECRET_KEY": SECRET}
    )
    assert result.returncode == ExitCode.OK, result.stderr
    token = result.stdout.strip()
    response = fleet_server.get("/v1/cohorts/none-here/telemetry", token=token)
    assert response.status_code == 404  # authenticated and authorised; the cohort is unknown


def test_token_command_needs_the_secret() -> None:
    result = _tensorguard("token", "--role", "operator", "--subject", "alice", env={})
    assert result.returncode == ExitCode.CONFIG
    assert "TG_SECRET_KEY is not set" in result.stderr


def test_secret_never_leaves_the_server(fleet_server: FleetServer) -> None:
    # Make the server log a refused token and a database-backed request first.
    fleet_server.get("/v1/nodes/x", token="not-a-token")
    fleet_server.get("/v1/nodes/x", token=fleet_server.token())
    openapi = fleet_server.get("/openapi.json").text
    encodings = [SECRET, SECRET.encode().hex(), base64.b64encode(SECRET.encode()).decode()]
    assert [e for e in encodings if e in openapi] == []
    assert "TG_SECRET_KEY" not in openapi  # nothing about the signing key is published
    # The one credential the API takes (a connector's) is documented as write-only.
    response_schemas = json.loads(openapi)["components"]["schemas"]
    assert [
        name
        for name, schema in response_schemas.items()
        if name != "ConnectorRequest" and "credentials" in schema.get("properties", {})
    ] == []
    log = fleet_server.log()
    assert [e for e in encodings if e in log] == []


def test_readyz_reports_a_database_that_is_gone(tmp_path: Path) -> None:
    with running_fleet_server(tmp_path) as server:
        assert server.get("/readyz").status_code == 200
        (tmp_path / "fleet.db").unlink()
        response = requests.get(server.url + "/readyz", timeout=10)
        assert response.status_code == 503
        assert response.json()["status"] == "unavailable"
        assert server.get("/healthz").status_code == 200


def test_validation_errors_do_not_echo_what_was_sent(fleet_server: FleetServer) -> None:
    marker = "sensitive-value-" + "z" * 5000  # too long: refused by the schema
    response = fleet_server.post_json(
        "/v1/tokens/revoke", {"token": marker}, token=fleet_server.token()
    )
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "token"]
    assert "sensitive-value" not in response.text


def test_sigterm_stops_the_server_cleanly(tmp_path: Path) -> None:
    with running_fleet_server(tmp_path) as server:
        assert server.get("/healthz").status_code == 200
    process = server.process.process
    assert process is not None
    # uvicorn shuts down gracefully, then re-raises the signal it caught (systemd counts
    # an exit by SIGTERM after a stop request as clean).
    assert process.returncode in (0, -signal.SIGTERM), server.log()[-2000:]
    assert "Application shutdown complete" in server.log()
