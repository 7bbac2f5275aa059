"""Preflight: every problem of a deployment, found at once, before any work starts.

``run_preflight`` checks what a party's runs will need — secrets and their strength,
each key vault (provider, directory, master or token, the keys production requires),
the site registry and every site's public key files, the coordinator's public key,
enrolled fleet recipients, the MQTT broker (connecting with the configured
credentials), the application database and the Dagster instance's storage — and
returns one :class:`Check` per item, each saying what was found or what is wrong and
how to fix it. Nothing stops at the first failure. ``tensorguard preflight`` prints the
report; in production the pipeline runs the same checks when a run starts
(``tensorguard_resources.runtime``) and fails the run with every problem in one message.

No value of a secret ever appears in a check's text: every message passes through
:func:`redact`, which removes the values of the secret variables (and the password of
``DATABASE_URL``). No Dagster import: the Dagster instance is read from
``$DAGSTER_HOME/dagster.yaml`` as YAML.

Parties (docs/OPERATIONS.md, "Separate parties"): ``coordinator`` (the ``tensorguard``
code location: coordinator, sites, publisher; vaults ``sites`` and ``release``; broker,
application database), ``aggregator`` (no vault), ``custodian`` (vault ``custodian``).
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tensorguard.errors import TensorGuardError
from tensorguard.keys import (
    MASTER_HOW_TO,
    master_strength_problem,
    party_environ,
    party_key_dir,
    state_dir,
)
from tensorguard.production import (
    MIN_SECRET_LENGTH,
    PARTY_KEY_DIR_ENV,
    PARTY_MASTER_ENV,
    PARTY_TOKEN_ENV,
    demo_mode_problems,
    env_flag,
    is_production,
    party_variable,
    pqc_backend_problem,
    shared_party_settings,
)

ALLOW_SQLITE_ENV = "TG_ALLOW_SQLITE"
ALLOW_SQLITE_VALUE = "single-machine"
"""``TG_ALLOW_SQLITE=single-machine`` lets production keep the application database and
the Dagster instance in SQLite: every process of the deployment runs on one machine."""

SITES_FILE_ENV = "TG_SITES_FILE"
COORDINATOR_PUBLIC_KEY_ENV = "TG_COORDINATOR_PUBLIC_KEY"
COORDINATOR_KEY_NAME = "round-coordinator"
CUSTODIAN_KEY_NAME = "federation-custodian"
RELEASE_KEY_NAME_ENV = "TG_RELEASE_KEY_NAME"
DEFAULT_RELEASE_KEY_NAME = "release-signing"
RECIPIENTS_DIR_ENV = "TG_FLEET_RECIPIENTS_DIR"
DATABASE_URL_ENV = "DATABASE_URL"
SECRET_KEY_ENV = "TG_SECRET_KEY"  # noqa: S105 - a variable name, not a secret
RANDOM_SECRET_HINT = "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`"  # noqa: S105

KEM_FLAG = " --kind kem"

SECRET_VARIABLE_PREFIXES = (
    "TG_KEY_MASTER",
    "TG_PKCS11_PIN",
    "TG_SECRET_KEY",
    "TG_MQTT_PASSWORD",
    "TG_DAGSTER_PG_PASSWORD",
    "TG_NEW_KEY_MASTER",
)
"""Variables whose values are secrets (and every ``<NAME>_<PARTY>`` form of them)."""


class Party(StrEnum):
    """Who runs a code location, and so which checks apply."""

    COORDINATOR = "coordinator"
    AGGREGATOR = "aggregator"
    CUSTODIAN = "custodian"


PARTY_VAULTS: Mapping[Party, tuple[str, ...]] = {
    Party.COORDINATOR: ("sites", "release"),
    Party.AGGREGATOR: (),
    Party.CUSTODIAN: ("custodian",),
}
"""The key vaults (:data:`~tensorguard.production.KEY_PARTIES`) each party's runs open."""

LOCATION_PARTIES: Mapping[str, Party] = {
    "tensorguard": Party.COORDINATOR,
    "tensorguard-aggregator": Party.AGGREGATOR,
    "tensorguard-custodian": Party.CUSTODIAN,
}
"""The Dagster code location (workspace.yaml) of each party."""


@dataclass(frozen=True)
class Check:
    """One preflight item: its scope (a party or ``common``), what was checked, whether it
    passed, and what was found or what is wrong and how to fix it."""

    scope: str
    name: str
    ok: bool
    message: str

    def line(self) -> str:
        """The report line: ``OK|FAIL  scope  name: message``."""
        return f"{'OK  ' if self.ok else 'FAIL'}  {self.scope:<11}  {self.name}: {self.message}"


@dataclass(frozen=True)
class PreflightReport:
    """Every check of one preflight run, in order."""

    production: bool
    parties: tuple[Party, ...]
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        """The failed checks."""
        return tuple(check for check in self.checks if not check.ok)

    def summary(self) -> str:
        """One closing line: how many checks failed of how many."""
        mode = "production" if self.production else "development"
        parties = ", ".join(self.parties)
        failed = len(self.failures)
        verdict = "all passed" if failed == 0 else f"{failed} of {len(self.checks)} failed"
        return f"preflight ({mode}; {parties}): {len(self.checks)} checks, {verdict}"

    def failure_message(self) -> str:
        """Every failed check in one message (for a run that must not start)."""
        listing = "\n  - ".join(f"{c.name}: {c.message}" for c in self.failures)
        return f"preflight failed ({len(self.failures)} problem(s)):\n  - {listing}"


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """The values to keep out of any output: secret variables and database passwords."""
    values = [
        value
        for name, value in environ.items()
        if value and any(name.startswith(prefix) for prefix in SECRET_VARIABLE_PREFIXES)
    ]
    database_url = environ.get(DATABASE_URL_ENV, "")
    if "@" in database_url and ":" in database_url.split("@", 1)[0].split("//", 1)[-1]:
        password = database_url.split("@", 1)[0].split("//", 1)[-1].split(":", 1)[1]
        if password:
            values.append(password)
    values.extend([quote(value, safe="") for value in values])
    return sorted({value for value in values if len(value) >= 4}, key=len, reverse=True)


def redact(text: str, environ: Mapping[str, str]) -> str:
    """``text`` with every secret value of ``environ`` replaced by ``***``."""
    for value in secret_values(environ):
        text = text.replace(value, "***")
    return text


CheckFunction = Callable[[], tuple[bool, str]]


class _Collector:
    """Gathers checks; a check that raises a TensorGuard, OS or value error fails with
    that error's message instead of stopping the preflight."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.checks: list[Check] = []

    def add(self, scope: str, name: str, ok: bool, message: str) -> None:
        self.checks.append(Check(scope, name, ok, redact(message, self.environ)))

    def run(self, scope: str, name: str, check: CheckFunction) -> bool:
        try:
            ok, message = check()
        except (TensorGuardError, OSError, ValueError) as exc:
            ok, message = False, f"{type(exc).__name__}: {exc}"
        self.add(scope, name, ok, message)
        return ok


def run_preflight(
    parties: Sequence[Party] = tuple(Party),
    environ: Mapping[str, str] | None = None,
    *,
    pqc_probe: Callable[[], str | None] = pqc_backend_problem,
) -> PreflightReport:
    """Check everything ``parties``' runs need; never stops at the first problem."""
    env = dict(os.environ if environ is None else environ)
    collector = _Collector(env)
    production = _check_environment(collector, pqc_probe)
    state = state_dir(env)
    registry = _check_sites(collector, production)
    _check_coordinator_public_key(collector, production)
    _check_dagster_instance(collector, production)
    vaults = [vault for party in parties for vault in PARTY_VAULTS[party]]
    if vaults and production:
        collector.run("common", "parties' secrets", lambda: _shared_settings(env))
    for party in parties:
        scope = party.value
        for vault in PARTY_VAULTS[party]:
            _check_vault(collector, scope, vault, state, production, registry)
        if party is Party.COORDINATOR:
            collector.run(scope, "fleet recipients", lambda: _recipients(env, state, production))
            collector.run(scope, "MQTT broker", lambda: _broker(env, production))
            collector.run(scope, "application database", lambda: _database(env, production))
            collector.run(scope, SECRET_KEY_ENV, lambda: _service_secret(env))
    return PreflightReport(production, tuple(parties), tuple(collector.checks))


def _check_environment(collector: _Collector, pqc_probe: Callable[[], str | None]) -> bool:
    env = collector.environ
    try:
        production = is_production(env)
    except TensorGuardError as exc:
        collector.add("common", "TG_ENVIRONMENT", False, str(exc))
        return True  # an unknown environment is checked as strictly as production
    collector.add(
        "common",
        "TG_ENVIRONMENT",
        True,
        "production"
        if production
        else "development (set TG_ENVIRONMENT=production for a real federation)",
    )
    if production:
        problems = demo_mode_problems(env)
        collector.add("common", "TG_DEMO_MODE", not problems, "; ".join(problems) or "unset")
    if production or env_flag("TG_PQC_REQUIRED", env):
        problem = pqc_probe()
        collector.add(
            "common",
            "post-quantum backend",
            problem is None,
            "works"
            if problem is None
            else f"{problem}: install cryptography>=48 or `pip install 'tensorguard[oqs]'`",
        )
    return production


def _shared_settings(env: Mapping[str, str]) -> tuple[bool, str]:
    problems = shared_party_settings(env)
    if problems:
        return False, "; ".join(problems)
    return True, "each party has its own master, token and key directory"


def _check_sites(collector: _Collector, production: bool) -> dict[str, Any] | None:
    """The site registry and every site's key files; the parsed registry, or None."""
    from tensorguard.sites import demo_site_registry, load_site_registry

    env = collector.environ
    sites_file = env.get(SITES_FILE_ENV, "")
    registry: dict[str, Any]
    try:
        if not sites_file:
            if production:
                collector.add(
                    "common",
                    SITES_FILE_ENV,
                    False,
                    "not set: production needs the federation's site registry; set "
                    f"{SITES_FILE_ENV} to its YAML file (format: docs/OPERATIONS.md, "
                    '"Site registry")',
                )
                return None
            registry = dict(demo_site_registry())
            collector.add(
                "common", SITES_FILE_ENV, True, f"not set: the demo sites ({', '.join(registry)})"
            )
        else:
            registry = dict(load_site_registry(Path(sites_file)))
            collector.add("common", SITES_FILE_ENV, True, f"{sites_file}: {', '.join(registry)}")
    except TensorGuardError as exc:
        collector.add("common", SITES_FILE_ENV, False, str(exc))
        return None
    for site_id, record in registry.items():
        collector.run("common", f"site {site_id}", partial(_site_files, record, production))
    return registry


def _site_files(record: Any, production: bool) -> tuple[bool, str]:
    from tensorguard.tgsp import load_recipient_public_key, load_verify_key

    problems: list[str] = []
    if not Path(record.data_dir).is_dir():
        problems.append(f"data_dir {record.data_dir} is not a directory")
    for field, path, load in (
        ("public_key", record.public_key_path, load_verify_key),
        ("kem_public_key", record.kem_public_key_path, load_recipient_public_key),
    ):
        if path is None:
            if production:
                command = "show --name site-<id>" if field == "public_key" else "show --kind kem"
                problems.append(
                    f"no {field}: add the site's {field} file to {SITES_FILE_ENV} "
                    f"(`tensorguard keys {command} --public-out FILE` in the site's vault)"
                )
            continue
        try:
            load(path)
        except TensorGuardError as exc:
            problems.append(f"{field}: {exc}")
    if production and record.max_weight is None:
        problems.append("no max_weight: add max_weight: <examples> to the site's entry")
    if problems:
        return False, "; ".join(problems)
    keys = "key files load" if record.public_key_path else "no key files (development)"
    return True, f"data_dir exists, {keys}"


def _check_coordinator_public_key(collector: _Collector, production: bool) -> None:
    from tensorguard.tgsp import load_verify_key

    pinned = collector.environ.get(COORDINATOR_PUBLIC_KEY_ENV, "")

    def check() -> tuple[bool, str]:
        if not pinned:
            if production:
                return False, (
                    "not set: every step verifies the signed round spec under it; export it "
                    f"with `tensorguard keys show --name {COORDINATOR_KEY_NAME} --public-out "
                    f"coordinator.pub` (publisher's vault) and set {COORDINATOR_PUBLIC_KEY_ENV}"
                )
            return True, "not set: development publishes coordinator.pub beside the artifacts"
        key = load_verify_key(Path(pinned))
        return True, f"{pinned} (key id {key.fingerprint()[:16]}…)"

    collector.run("common", COORDINATOR_PUBLIC_KEY_ENV, check)


def _check_dagster_instance(collector: _Collector, production: bool) -> None:
    collector.run(
        "common", "Dagster instance", lambda: _dagster_instance(collector.environ, production)
    )


def _dagster_instance(env: Mapping[str, str], production: bool) -> tuple[bool, str]:
    import yaml

    home = env.get("DAGSTER_HOME", "")
    if not home:
        if production:
            return False, (
                "DAGSTER_HOME is not set: point it at the instance directory holding "
                "dagster.yaml (copy deploy/dagster.postgres.yaml there)"
            )
        return True, "DAGSTER_HOME not set (development tools use a temporary instance)"
    config_file = Path(home) / "dagster.yaml"
    document: Any = {}
    if config_file.is_file():
        document = yaml.safe_load(config_file.read_text(encoding="utf-8")) or {}
    storage = _storage_kind(document)
    if storage != "postgres":
        if production and env.get(ALLOW_SQLITE_ENV, "") != ALLOW_SQLITE_VALUE:
            return False, (
                f"{config_file} keeps runs and events in {storage}: production needs "
                "PostgreSQL (copy deploy/dagster.postgres.yaml to it and set "
                f"TG_DAGSTER_PG_*), or {ALLOW_SQLITE_ENV}={ALLOW_SQLITE_VALUE} for a "
                "deployment whose processes all run on this one machine"
            )
        return True, f"{config_file}: {storage} storage"
    missing = sorted(name for name in _env_references(document.get("storage")) if not env.get(name))
    if missing:
        return False, (
            f"{config_file} reads {', '.join(missing)} from the environment, which "
            f"{'is' if len(missing) == 1 else 'are'} not set: set the PostgreSQL connection"
        )
    return True, f"{config_file}: PostgreSQL storage"


def _storage_kind(document: Any) -> str:
    """``postgres`` or ``sqlite`` (Dagster's default) from a dagster.yaml document."""
    if not isinstance(document, dict):
        return "sqlite"
    storage = document.get("storage")
    if isinstance(storage, dict) and "postgres" in storage:
        return "postgres"
    parts = [
        document.get(name) for name in ("run_storage", "event_log_storage", "schedule_storage")
    ]
    modules = [part.get("module", "") for part in parts if isinstance(part, dict)]
    if len(modules) == 3 and all(str(module).startswith("dagster_postgres") for module in modules):
        return "postgres"
    return "sqlite"


def _env_references(node: Any) -> Iterable[str]:
    """Every ``{env: NAME}`` reference inside a dagster.yaml section."""
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            yield node["env"]
            return
        for value in node.values():
            yield from _env_references(value)


def _check_vault(
    collector: _Collector,
    scope: str,
    vault: str,
    state: str,
    production: bool,
    registry: Mapping[str, Any] | None,
) -> None:
    """One key vault: its secret, its directory, and (when it opens) the keys it must hold."""
    from tensorguard.keys import PROVIDER_ENV

    env = collector.environ
    provider_kind = env.get(PROVIDER_ENV, "").strip().lower() or "file"
    key_dir = party_key_dir(vault, state, env)
    if provider_kind == "pkcs11":
        secret_ok = collector.run(
            scope, f"{vault} vault token", lambda: _token(env, vault, production)
        )
    else:
        secret_ok = collector.run(
            scope, f"{vault} vault master", lambda: _master(env, vault, production)
        )
    dir_ok = collector.run(
        scope, f"{vault} key directory", lambda: _key_dir(env, vault, Path(key_dir), production)
    )
    master_set = provider_kind == "pkcs11" or bool(env.get(party_variable(PARTY_MASTER_ENV, vault)))
    if not (secret_ok and dir_ok and master_set and Path(key_dir).is_dir()):
        return
    names = _required_keys(vault, env, registry)
    collector.run(
        scope,
        f"{vault} vault keys",
        lambda: _vault_keys(env, vault, key_dir, names, production, registry),
    )


def _master(env: Mapping[str, str], vault: str, production: bool) -> tuple[bool, str]:
    name = party_variable(PARTY_MASTER_ENV, vault)
    value = env.get(name, "")
    how = (
        f"set {name} to the {vault} party's own key-encryption master (at least "
        f"{MIN_SECRET_LENGTH} bytes, {RANDOM_SECRET_HINT}) from its secret manager"
    )
    if not value:
        if production:
            return False, f"not set: {how}"
        return True, "not set: development uses a generated development master"
    if len(value.encode()) < MIN_SECRET_LENGTH:
        return False, f"shorter than {MIN_SECRET_LENGTH} bytes: {how}"
    if production:
        problem = master_strength_problem(value)
        if problem is not None:
            return False, f"{problem}: {MASTER_HOW_TO.replace('TG_KEY_MASTER', name, 1)}"
        return True, "set (hex/base64 of 32+ random bytes)"
    return True, f"set ({MIN_SECRET_LENGTH}+ bytes)"


def _token(env: Mapping[str, str], vault: str, production: bool) -> tuple[bool, str]:
    from tensorguard.keys import PKCS11_MODULE_ENV

    label = party_variable(PARTY_TOKEN_ENV, vault)
    pin = party_variable("TG_PKCS11_PIN", vault)
    problems = []
    if not env.get(PKCS11_MODULE_ENV):
        problems.append(f"{PKCS11_MODULE_ENV} is not set: set it to the HSM's PKCS#11 library")
    if not env.get(label) and (production or not env.get(PARTY_TOKEN_ENV)):
        problems.append(f"{label} is not set: set it to the {vault} party's own token label")
    if not env.get(pin) and not env.get("TG_PKCS11_PIN"):
        problems.append(f"{pin} is not set: set it to that token's user PIN")
    if problems:
        return False, "; ".join(problems)
    return True, "PKCS#11 module, token label and PIN set (no master needed)"


def _key_dir(env: Mapping[str, str], vault: str, path: Path, production: bool) -> tuple[bool, str]:
    own = party_variable(PARTY_KEY_DIR_ENV, vault)
    if production and not env.get(own) and not env.get(PARTY_KEY_DIR_ENV):
        return False, (
            f"neither {own} nor {PARTY_KEY_DIR_ENV} is set: production never uses the "
            f"development default ({path}); set {own} to the {vault} party's key directory "
            "on a persistent, backed-up volume"
        )
    if not path.exists() and not path.is_symlink():
        if production:
            return False, (
                f"{path} does not exist: create the party's keys there with `tensorguard "
                f"keys generate` (TG_KEY_DIR={path}) or `mkdir -m 700 -p {path}`"
            )
        return True, f"{path} (created on first use)"
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        return False, f"{path} is not a directory (symbolic links are refused)"
    if info.st_mode & 0o077:
        return False, f"{path} is accessible to other users: run `chmod 700 {path}`"
    if not os.access(path, os.W_OK | os.X_OK):
        return False, f"{path} is not writable by this user: fix its owner"
    return True, f"{path} (private, writable)"


def _required_keys(
    vault: str, env: Mapping[str, str], registry: Mapping[str, Any] | None
) -> list[tuple[str, str]]:
    """(name, kind) of the keys a vault must hold before a production round."""
    if vault == "release":
        release = env.get(RELEASE_KEY_NAME_ENV, "") or DEFAULT_RELEASE_KEY_NAME
        return [(release, "signing"), (COORDINATOR_KEY_NAME, "signing")]
    if vault == "custodian":
        return [(CUSTODIAN_KEY_NAME, "signing")]
    names: list[tuple[str, str]] = []
    for site_id in registry or {}:
        names.extend([(f"site-{site_id}", "signing"), (f"site-{site_id}-kem", "kem")])
    return names


def _vault_keys(
    env: Mapping[str, str],
    vault: str,
    key_dir: str,
    names: list[tuple[str, str]],
    production: bool,
    registry: Mapping[str, Any] | None,
) -> tuple[bool, str]:
    from tensorguard.keys import KeyNotFoundError, key_provider_from_env

    missing: list[str] = []
    problems: list[str] = []
    with key_provider_from_env(
        party_environ(env, vault, key_dir), allow_ephemeral=False
    ) as provider:
        for name, kind in names:
            try:
                if kind == "signing":
                    fingerprint = provider.fingerprint(name)
                else:
                    fingerprint = provider.kem_private_key(name).public_key().fingerprint()
            except KeyNotFoundError:
                missing.append(name)
                continue
            problem = _registry_mismatch(name, fingerprint, env, registry)
            if problem:
                problems.append(problem)
        listed = len(provider.list_keys())
    if missing and production:
        commands = "; ".join(
            f"`tensorguard keys generate --name {name}{KEM_FLAG if name.endswith('-kem') else ''}`"
            for name in missing
        )
        problems.append(
            f"missing {', '.join(missing)}: create them in this vault (TG_KEY_DIR={key_dir}, "
            f"TG_KEY_MASTER=<{party_variable(PARTY_MASTER_ENV, vault)}>): {commands}"
        )
    if problems:
        return False, "; ".join(problems)
    absent = f"; created on first use in development: {', '.join(missing)}" if missing else ""
    return True, f"opens; {listed} key(s), the required ones authenticate{absent}"


def _registry_mismatch(
    name: str, fingerprint: str, env: Mapping[str, str], registry: Mapping[str, Any] | None
) -> str:
    """Why a vault key differs from the public key the others pin, or ''."""
    from tensorguard.tgsp import load_recipient_public_key, load_verify_key

    pinned: Path | None = None
    load: Callable[[Path], Any] = load_verify_key
    if name == COORDINATOR_KEY_NAME and env.get(COORDINATOR_PUBLIC_KEY_ENV):
        pinned = Path(env[COORDINATOR_PUBLIC_KEY_ENV])
    elif name.startswith("site-") and registry:
        site_id = name.removeprefix("site-").removesuffix("-kem")
        record = registry.get(site_id)
        if record is not None and name.endswith("-kem"):
            pinned, load = record.kem_public_key_path, load_recipient_public_key
        elif record is not None:
            pinned = record.public_key_path
    if pinned is None or not pinned.is_file():
        return ""
    try:
        if load(pinned).fingerprint() != fingerprint:
            return f"{name} is not the key {pinned} holds: export it again with --public-out"
    except TensorGuardError:
        return ""  # the key file's own problem is reported by its own check
    return ""


def _recipients(env: Mapping[str, str], state: str, production: bool) -> tuple[bool, str]:
    from tensorguard.fleet.provisioning import PUBLIC_KEY_SUFFIX
    from tensorguard.tgsp import load_recipient_public_key

    directory = Path(env.get(RECIPIENTS_DIR_ENV, "") or os.path.join(state, "fleet-recipients"))
    files = sorted(directory.glob(f"*{PUBLIC_KEY_SUFFIX}")) if directory.is_dir() else []
    for path in files:
        load_recipient_public_key(path)
    if not files:
        enroll = (
            f"enroll a node: `tensorguard keys generate --name NODE --kind kem --public-out "
            f"{directory}/NODE{PUBLIC_KEY_SUFFIX}` (in the node's own vault)"
        )
        if production:
            return False, f"no *{PUBLIC_KEY_SUFFIX} in {directory}: {enroll}"
        return True, f"none in {directory} yet (development enrols a demo node)"
    return True, f"{len(files)} node(s) in {directory}"


def _broker(env: Mapping[str, str], production: bool) -> tuple[bool, str]:
    from tensorguard.fleet.mqtt import MqttConnection, pipeline_mqtt_settings

    host = env.get("TG_MQTT_HOST", "")
    if not host:
        if production:
            return False, (
                "TG_MQTT_HOST is not set: production releases are announced to the fleet; "
                "set TG_MQTT_HOST (and TG_MQTT_PORT, TG_MQTT_USERNAME, TG_MQTT_PASSWORD, "
                "TG_MQTT_CA_FILE as the broker requires)"
            )
        return True, "TG_MQTT_HOST not set (development: releases are not announced)"
    settings = pipeline_mqtt_settings(
        host,
        int(env.get("TG_MQTT_PORT", "") or "1883"),
        username=env.get("TG_MQTT_USERNAME", ""),
        tls_ca_file=env.get("TG_MQTT_CA_FILE", ""),
        tls_cert_file=env.get("TG_MQTT_CERT_FILE", ""),
        tls_key_file=env.get("TG_MQTT_KEY_FILE", ""),
        environ=env,
    ).model_copy(update={"timeout_s": 5.0})
    connection = MqttConnection(settings, f"tensorguard-preflight-{secrets.token_hex(4)}")
    connection.connect()
    connection.disconnect()
    who = f"as {settings.username}" if settings.username else "anonymously"
    tls = "TLS" if settings.uses_tls else "plain TCP"
    return True, f"connected to {settings.endpoint} {who} ({tls})"


def _database(env: Mapping[str, str], production: bool) -> tuple[bool, str]:
    url = env.get(DATABASE_URL_ENV, "")
    if not url:
        if production:
            return False, (
                f"{DATABASE_URL_ENV} is not set: set it to the application database, e.g. "
                "postgresql://tg:PASSWORD@db:5432/tensorguard"
            )
        return True, "not set (development: a SQLite file beside the artifacts)"
    from tensorguard.fleet.db import current_revision, head_revision, safe_url

    backend = url.split(":", 1)[0].split("+", 1)[0].lower()
    if backend != "postgresql":
        allowed = env.get(ALLOW_SQLITE_ENV, "") == ALLOW_SQLITE_VALUE and backend == "sqlite"
        if production and not allowed:
            return False, (
                f"{safe_url(url)} is not PostgreSQL: production keeps the application "
                f"database in PostgreSQL (or set {ALLOW_SQLITE_ENV}={ALLOW_SQLITE_VALUE} for "
                "a deployment on one machine)"
            )
    revision = current_revision(url)
    schema = (
        "schema current"
        if revision == head_revision()
        else f"schema at {revision or 'nothing'}, migrated when a run starts"
    )
    return True, f"{safe_url(url)} reachable ({schema})"


def _service_secret(env: Mapping[str, str]) -> tuple[bool, str]:
    value = env.get(SECRET_KEY_ENV, "")
    if not value:
        return True, "not set (only the fleet service, `tensorguard serve`, uses it)"
    if len(value.encode()) < MIN_SECRET_LENGTH:
        return False, (
            f"shorter than {MIN_SECRET_LENGTH} bytes: the fleet service signs its tokens with "
            f"it; set a random value, {RANDOM_SECRET_HINT}"
        )
    return True, f"set ({MIN_SECRET_LENGTH}+ bytes; the fleet service's token key)"


def parties_named(name: str) -> tuple[Party, ...]:
    """``coordinator``, ``aggregator``, ``custodian`` or ``all``."""
    if name == "all":
        return tuple(Party)
    return (Party(name),)


__all__ = [
    "ALLOW_SQLITE_ENV",
    "ALLOW_SQLITE_VALUE",
    "LOCATION_PARTIES",
    "PARTY_VAULTS",
    "Check",
    "Party",
    "PreflightReport",
    "parties_named",
    "redact",
    "run_preflight",
]
