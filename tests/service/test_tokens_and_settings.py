"""Tokens and settings without a server."""

from __future__ import annotations

import time

import jwt
import pytest

from tensorguard.errors import ConfigurationError
from tensorguard.service.errors import AuthenticationError, ServiceConfigError
from tensorguard.service.settings import load_settings
from tensorguard.service.tokens import Role, issue_token, verify_token

SECRET = "unit-test-token-key-" + "s" * 20


def test_issued_token_round_trips_with_every_claim() -> None:
    settings = load_settings({"TG_SECRET_KEY": SECRET})
    token = issue_token(settings, "alice", Role.AUDITOR, lifetime_s=60)
    principal = verify_token(settings, token)
    assert (principal.subject, principal.role, principal.actor) == (
        "alice",
        Role.AUDITOR,
        "auditor:alice",
    )
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "sub", "role", "iat", "nbf", "exp", "jti"}
    assert claims["exp"] - claims["iat"] == 60
    assert jwt.get_unverified_header(token)["alg"] == "HS256"


def test_tokens_from_another_service_key_are_refused() -> None:
    mine = load_settings({"TG_SECRET_KEY": SECRET})
    theirs = load_settings({"TG_SECRET_KEY": SECRET + "-other"})
    with pytest.raises(AuthenticationError, match="signature"):
        verify_token(mine, issue_token(theirs, "alice", Role.OPERATOR))


def test_issue_refuses_node_role_and_long_lifetimes() -> None:
    settings = load_settings({"TG_SECRET_KEY": SECRET, "TG_TOKEN_MAX_LIFETIME_S": "600"})
    with pytest.raises(ServiceConfigError, match="cannot hold a token"):
        issue_token(settings, "robot-1", Role.EDGE_NODE)
    with pytest.raises(ServiceConfigError, match="lifetime"):
        issue_token(settings, "alice", Role.OPERATOR, lifetime_s=601)


def test_expiry_honours_the_leeway_only() -> None:
    settings = load_settings({"TG_SECRET_KEY": SECRET})
    issued = time.time() - 100
    within = issue_token(settings, "alice", Role.OPERATOR, lifetime_s=100 - 10, now=issued)
    verify_token(settings, within)  # expired 10 s ago: inside the 30 s leeway
    beyond = issue_token(settings, "alice", Role.OPERATOR, lifetime_s=100 - 60, now=issued)
    with pytest.raises(AuthenticationError, match="expired"):
        verify_token(settings, beyond)


@pytest.mark.parametrize("token", ["", "a.b", "x" * 5000, "e30.e30.e30"])
def test_garbage_tokens_are_refused(token: str) -> None:
    with pytest.raises(AuthenticationError):
        verify_token(load_settings({"TG_SECRET_KEY": SECRET}), token)


def test_settings_never_show_the_secret() -> None:
    settings = load_settings({"TG_SECRET_KEY": SECRET})
    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert SECRET not in settings.model_dump_json()


def test_development_without_a_key_generates_one() -> None:
    first = load_settings({})
    second = load_settings({})
    assert first.secret_key_generated
    assert first.secret_key.get_secret_value() != second.secret_key.get_secret_value()
    assert len(first.secret_key.get_secret_value().encode()) >= 32


def test_production_lists_every_problem_at_once() -> None:
    with pytest.raises(ServiceConfigError) as excinfo:
        load_settings({"TG_ENVIRONMENT": "production", "TG_DEMO_MODE": "1"})
    message = str(excinfo.value)
    for expected in ("TG_SECRET_KEY is not set", "DATABASE_URL is not set", "TG_DEMO_MODE"):
        assert expected in message


def test_production_with_requirements_is_accepted() -> None:
    settings = load_settings(
        {"TG_ENVIRONMENT": "production", "TG_SECRET_KEY": SECRET, "TG_NODE_AUTH": "signature"},
        database_url="postgresql://fleet@db:5432/tensorguard",
    )
    assert settings.environment == "production"
    assert not settings.secret_key_generated


@pytest.mark.parametrize(
    ("variable", "value"),
    [("TG_TELEMETRY_WINDOW_S", "soon"), ("TG_RATE_LIMIT_BURST", "0"), ("TG_ENVIRONMENT", "prod")],
)
def test_invalid_settings_are_configuration_errors(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        load_settings({"TG_SECRET_KEY": SECRET, variable: value})
    assert variable.removeprefix("TG_").split("_")[0].lower() in str(info.value).lower()
