"""Settings of ``tensorguard serve``, read from ``TG_*`` variables, with the production rules.

==============================  ===========================================================
variable                        meaning (default)
==============================  ===========================================================
``TG_ENVIRONMENT``              ``development`` (default) or ``production``
``TG_SECRET_KEY``               HS256 key of operator/evaluator/auditor tokens; production
                                requires at least 32 bytes. Unset in development: a random
                                key is generated for the process (logged as such).
``DATABASE_URL``                application DB (``sqlite:///.tensorguard/tensorguard.db``);
                                required in production
``TG_DEMO_MODE``                refused in production
``TG_TOKEN_ISSUER``             expected ``iss`` (``tensorguard``)
``TG_TOKEN_AUDIENCE``           expected ``aud`` (``tensorguard-fleet``)
``TG_TOKEN_MAX_LIFETIME_S``     longest accepted ``exp - iat`` (3600)
``TG_SIGNATURE_WINDOW_S``       accepted clock skew of signed node requests (300)
``TG_TELEMETRY_WINDOW_S``       how far back telemetry reads look (900)
``TG_RATE_LIMIT_PER_MINUTE``    requests per client address and minute (600)
``TG_RATE_LIMIT_BURST``         requests a client may send at once (60)
``TG_REGISTRY_ROOT``            the release registry whose packages enrolled nodes download
                                (``.tensorguard/registry``, the pipeline's default)
``TG_TLS_*``, ``TG_NODE_AUTH``  HTTPS, node certificates and how node routes authenticate
                                (:mod:`tensorguard.service.tls_settings`)
==============================  ===========================================================
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from tensorguard.fleet.db import sqlite_url
from tensorguard.production import (
    MIN_SECRET_LENGTH,
    Environment,
    current_environment,
    demo_mode_problems,
    secret_problems,
    service_requirements,
)
from tensorguard.service.errors import ServiceConfigError
from tensorguard.service.tls_settings import TlsSettings, tls_settings_from_env

LOG = logging.getLogger(__name__)
# The same application DB the pipeline records releases in (README: DATABASE_URL).
DEFAULT_DATABASE = Path(".tensorguard") / "tensorguard.db"
# The registry the pipeline publishes to by default (TG_REGISTRY_ROOT).
DEFAULT_REGISTRY = Path(".tensorguard") / "registry"


class ServiceSettings(BaseModel):
    """Everything the fleet service needs to run; secrets are ``SecretStr`` (never shown)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    environment: Environment = Environment.DEVELOPMENT
    database_url: str = Field(description="SQLAlchemy URL of the application database")
    secret_key: SecretStr = Field(description="HS256 key that operator tokens are signed with")
    secret_key_generated: bool = Field(
        default=False, description="True when the key was generated for this process (dev)"
    )
    token_issuer: str = "tensorguard"  # noqa: S105 - a claim value, not a secret
    token_audience: str = "tensorguard-fleet"  # noqa: S105 - a claim value, not a secret
    token_max_lifetime_s: int = Field(default=3600, gt=0, le=86400)
    token_leeway_s: int = Field(default=30, ge=0, le=300)
    signature_window_s: int = Field(default=300, gt=0, le=3600)
    telemetry_window_s: int = Field(default=900, gt=0)
    rate_limit_per_minute: int = Field(default=600, gt=0)
    rate_limit_burst: int = Field(default=60, gt=0)
    max_body_bytes: int = Field(default=65536, gt=0)
    registry_root: Path = Field(
        default=DEFAULT_REGISTRY, description="release registry served to enrolled nodes"
    )
    tls: TlsSettings = Field(
        default_factory=TlsSettings, description="HTTPS and node certificates (TG_TLS_*)"
    )


_INT_SETTINGS: dict[str, str] = {
    "TG_TOKEN_MAX_LIFETIME_S": "token_max_lifetime_s",
    "TG_SIGNATURE_WINDOW_S": "signature_window_s",
    "TG_TELEMETRY_WINDOW_S": "telemetry_window_s",
    "TG_RATE_LIMIT_PER_MINUTE": "rate_limit_per_minute",
    "TG_RATE_LIMIT_BURST": "rate_limit_burst",
}


def _int_overrides(env: Mapping[str, str]) -> dict[str, int]:
    values: dict[str, int] = {}
    for variable, field in _INT_SETTINGS.items():
        raw = env.get(variable, "").strip()
        if not raw:
            continue
        try:
            values[field] = int(raw)
        except ValueError:
            raise ServiceConfigError(
                f"{variable}={raw!r} is not an integer; set it to a whole number"
            ) from None
    return values


def load_settings(
    environ: Mapping[str, str] | None = None, *, database_url: str | None = None
) -> ServiceSettings:
    """Read the service settings; production refuses weak or missing secrets, demo mode
    and node routes without mutual TLS (unless ``TG_NODE_AUTH=signature`` says so).

    ``database_url`` (e.g. from ``--database-url``) overrides ``DATABASE_URL``.
    Raises :class:`ServiceConfigError` listing every unmet requirement at once.
    """
    env = dict(os.environ if environ is None else environ)
    if database_url:
        env["DATABASE_URL"] = database_url
    environment = current_environment(env)
    tls, tls_problems = tls_settings_from_env(env, environment)
    if environment is not Environment.PRODUCTION and tls_problems:
        listing = "\n  - ".join(tls_problems)
        raise ServiceConfigError(f"tensorguard serve refused its TLS settings:\n  - {listing}")
    if environment is Environment.PRODUCTION:
        problems = (
            secret_problems(service_requirements(), env) + demo_mode_problems(env) + tls_problems
        )
        if problems:
            listing = "\n  - ".join(problems)
            raise ServiceConfigError(
                f"TG_ENVIRONMENT=production: tensorguard serve refused to start:\n  - {listing}"
            )
    secret = env.get("TG_SECRET_KEY", "")
    generated = not secret
    if generated:
        secret = secrets.token_urlsafe(48)
        LOG.warning(
            "TG_SECRET_KEY is not set: generated a random token key for this process, "
            "development only (tokens die with the process; production refuses to start "
            "without TG_SECRET_KEY)"
        )
    elif len(secret.encode()) < MIN_SECRET_LENGTH:
        LOG.warning(
            "TG_SECRET_KEY is shorter than %d bytes: accepted in development only",
            MIN_SECRET_LENGTH,
        )
    url = env.get("DATABASE_URL") or sqlite_url(DEFAULT_DATABASE)
    try:
        return ServiceSettings(
            environment=environment,
            database_url=url,
            secret_key=SecretStr(secret),
            secret_key_generated=generated,
            token_issuer=env.get("TG_TOKEN_ISSUER") or "tensorguard",
            token_audience=env.get("TG_TOKEN_AUDIENCE") or "tensorguard-fleet",
            registry_root=Path(env.get("TG_REGISTRY_ROOT") or DEFAULT_REGISTRY),
            tls=tls,
            **_int_overrides(env),
        )
    except ValueError as exc:
        raise ServiceConfigError(f"invalid fleet service setting: {exc}") from None
