"""Production gates: what ``TG_ENVIRONMENT=production`` demands before anything runs.

Production mode requires real secrets and a working post-quantum backend, and it
refuses demo mode. Key secrets are per party (:data:`KEY_PARTIES`): each party's own
master (``TG_KEY_MASTER_<PARTY>``) or, with ``TG_KEY_PROVIDER=pkcs11``, its own token
(``TG_PKCS11_TOKEN_LABEL_<PARTY>``); two parties sharing one is refused. Every missing
requirement is reported at once, each with the variable's name and how to provide it,
so an operator fixes the deployment in one pass. Values of secrets are never read into messages.

Development mode (the default) may use throwaway keys; callers must say so loudly.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from tensorguard.errors import ProductionGateError

MIN_SECRET_LENGTH = 32
TRUE_VALUES = frozenset({"1", "true", "yes", "on"})


class Environment(StrEnum):
    """Where TensorGuard runs; selected by ``TG_ENVIRONMENT``."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


@dataclass(frozen=True)
class SecretRequirement:
    """An environment variable that production mode requires, with its remedy."""

    name: str
    how_to_provide: str
    min_length: int = 0


KEY_PARTIES: tuple[str, ...] = ("sites", "custodian", "release")
"""The parties that each hold their own key vault: the sites (signing, X-Wing and pair
secrets), the custodian (the CKKS secret and its ledger key), the publisher (the release
signing key). The aggregator is not among them: it holds no secret of any kind."""

PARTY_MASTER_ENV = "TG_KEY_MASTER"
PARTY_KEY_DIR_ENV = "TG_KEY_DIR"
PARTY_TOKEN_ENV = "TG_PKCS11_TOKEN_LABEL"  # noqa: S105 - a variable name, not a secret


def party_variable(base: str, party: str) -> str:
    """The per-party form of a key setting, e.g. ``TG_KEY_MASTER_CUSTODIAN``."""
    if party not in KEY_PARTIES:
        raise ValueError(f"unknown key party {party!r}; use one of {', '.join(KEY_PARTIES)}")
    return f"{base}_{party.upper()}"


DATABASE_URL_REQUIREMENT = SecretRequirement(
    "DATABASE_URL",
    "set it to the application database URL, e.g. postgresql://user@host:5432/tensorguard",
)

SERVICE_TOKEN_KEY = SecretRequirement(
    "TG_SECRET_KEY",
    "set it to a random value of at least 32 characters from your secret manager "
    "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`); only the fleet "
    "service (`tensorguard serve`, `tensorguard token`) uses it, to sign its tokens",
    MIN_SECRET_LENGTH,
)
"""The fleet service's token key. The pipeline never reads it, so its production gate
does not require it (:func:`production_problems`)."""

PRODUCTION_SECRETS: tuple[SecretRequirement, ...] = (DATABASE_URL_REQUIREMENT,)
"""What every pipeline run needs in production besides the key parties' secrets."""


def party_master_requirements() -> tuple[SecretRequirement, ...]:
    """Each party's own key-encryption master (file provider)."""
    return tuple(
        SecretRequirement(
            party_variable(PARTY_MASTER_ENV, party),
            f"set it to the {party} party's own key-encryption master (at least 32 "
            "characters, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`) "
            "from that party's secret manager; every party needs a different master, never "
            "one in the repository",
            MIN_SECRET_LENGTH,
        )
        for party in KEY_PARTIES
    )


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Read a boolean ``TG_*`` flag: 1/true/yes/on (any case) mean true."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value.strip().lower() in TRUE_VALUES


def current_environment(environ: Mapping[str, str] | None = None) -> Environment:
    """The configured environment; an unknown value is an error, not a silent default."""
    raw = (os.environ if environ is None else environ).get("TG_ENVIRONMENT", "development")
    try:
        return Environment(raw.strip().lower())
    except ValueError:
        choices = ", ".join(e.value for e in Environment)
        raise ProductionGateError(
            f"TG_ENVIRONMENT={raw!r} is not recognised; use one of: {choices}"
        ) from None


def is_production(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``TG_ENVIRONMENT=production``."""
    return current_environment(environ) is Environment.PRODUCTION


def pqc_backend_problem() -> str | None:
    """Return why no post-quantum backend works here, or None when one does."""
    from tensorguard.crypto import require_pqc_backend
    from tensorguard.errors import TensorGuardError

    try:
        require_pqc_backend()
    except TensorGuardError as exc:
        return str(exc)
    return None


def service_requirements() -> tuple[SecretRequirement, ...]:
    """What ``tensorguard serve`` needs in production: its token key and its database."""
    return (SERVICE_TOKEN_KEY, DATABASE_URL_REQUIREMENT)


def secret_problems(
    requirements: tuple[SecretRequirement, ...], environ: Mapping[str, str] | None = None
) -> list[str]:
    """One message per requirement that is unset or too short (values never quoted).

    Lengths are counted in UTF-8 bytes, so a short non-ASCII value cannot pass.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    for secret in requirements:
        value = env.get(secret.name, "")
        if not value:
            problems.append(f"{secret.name} is not set: {secret.how_to_provide}")
        elif len(value.encode()) < secret.min_length:
            problems.append(
                f"{secret.name} is shorter than {secret.min_length} bytes: {secret.how_to_provide}"
            )
    return problems


def demo_mode_problems(environ: Mapping[str, str] | None = None) -> list[str]:
    """The refusal of ``TG_DEMO_MODE`` in production, if it is set."""
    if env_flag("TG_DEMO_MODE", environ):
        return ["TG_DEMO_MODE is enabled: demo mode is refused in production; unset TG_DEMO_MODE"]
    return []


def production_problems(
    environ: Mapping[str, str] | None = None,
    pqc_probe: Callable[[], str | None] = pqc_backend_problem,
) -> list[str]:
    """List every unmet production requirement (empty when all are met)."""
    env = os.environ if environ is None else environ
    problems = secret_problems(PRODUCTION_SECRETS + _key_requirements(env), env)
    problems.extend(shared_party_settings(env))
    problems.extend(demo_mode_problems(env))
    pqc_problem = pqc_probe()
    if pqc_problem is not None:
        problems.append(
            f"no working post-quantum backend ({pqc_problem}): install cryptography>=48 "
            "(bundled ML-DSA/ML-KEM) or liboqs with `pip install tensorguard[oqs]`"
        )
    return problems


def _key_requirements(env: Mapping[str, str]) -> tuple[SecretRequirement, ...]:
    """What each party's key provider needs: a master (file) or a token (pkcs11)."""
    if env.get("TG_KEY_PROVIDER", "").strip().lower() == "pkcs11":
        return tuple(
            SecretRequirement(
                party_variable(PARTY_TOKEN_ENV, party),
                f"set it to the label of the {party} party's own PKCS#11 token (and "
                f"{party_variable('TG_PKCS11_PIN', party)} to its PIN); parties never share "
                "a token",
            )
            for party in KEY_PARTIES
        )
    return party_master_requirements()


def shared_party_settings(environ: Mapping[str, str] | None = None) -> list[str]:
    """Problems where two parties were given the same master, token or key directory.

    Values are compared, never quoted: a message names only the variables.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    for base, what, normalise in (
        (PARTY_MASTER_ENV, "master", str),
        (PARTY_TOKEN_ENV, "PKCS#11 token", str),
        (PARTY_KEY_DIR_ENV, "key directory", lambda value: os.path.abspath(value.rstrip("/"))),
    ):
        holders: dict[str, list[str]] = {}
        for party in KEY_PARTIES:
            value = env.get(party_variable(base, party), "")
            if value:
                holders.setdefault(normalise(value), []).append(party_variable(base, party))
        for names in holders.values():
            if len(names) > 1:
                problems.append(
                    f"{' and '.join(names)} are the same {what}: each party must hold its "
                    f"own {what}, so that no party can open another's keys; set a different "
                    "value for each"
                )
    return problems


def enforce_production_gates(
    environ: Mapping[str, str] | None = None,
    pqc_probe: Callable[[], str | None] = pqc_backend_problem,
) -> Environment:
    """Raise :class:`ProductionGateError` if production requirements are unmet.

    Returns the environment in force. Development mode passes without checks.
    """
    environment = current_environment(environ)
    if environment is Environment.PRODUCTION:
        problems = production_problems(environ, pqc_probe)
        if problems:
            listing = "\n  - ".join(problems)
            raise ProductionGateError(f"TG_ENVIRONMENT=production refused to start:\n  - {listing}")
    return environment
