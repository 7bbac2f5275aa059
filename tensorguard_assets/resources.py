"""Resources for each environment, chosen in one place from ``TG_*`` variables.

On the deployment path (:func:`build_resources` without ``environ``, as the code
locations call it) a set variable becomes a Dagster :class:`~dagster.EnvVar` reference:
the Dagster UI and the code location's snapshot show the variable's name, and each run
resolves it from its own process environment when it starts. A caller that passes its
own ``environ`` mapping (tests, tools that run stages in-process) gets literal values,
because Dagster resolves ``EnvVar`` from ``os.environ`` only. :func:`_setting` is the one
place that decides.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from dagster import EnvVar

from tensorguard.production import PARTY_KEY_DIR_ENV, party_variable
from tensorguard_assets.artifact_inputs import VERIFIED_ARTIFACTS, VerifiedArtifacts
from tensorguard_resources import ArtifactStore, SiteRegistry, TensorGuardRuntime
from tensorguard_resources.fleet import FleetResource
from tensorguard_resources.identity import FleetIdentity
from tensorguard_resources.keys import KeyVault, party_key_vault

DEFAULT_STATE_DIR = ".tensorguard"


def artifact_root_setting(environ: Mapping[str, str] | None = None) -> str:
    """The artifact store's base URI: ``TG_ARTIFACT_ROOT``, else ``.tensorguard/artifacts``."""
    env = os.environ if environ is None else environ
    return env.get("TG_ARTIFACT_ROOT", f"{DEFAULT_STATE_DIR}/artifacts")


def _setting(env: Mapping[str, str], name: str, default: str, live: bool) -> str:
    """A string field's value: ``EnvVar(name)`` when ``live`` and ``name`` is set, else
    ``env[name]``, else ``default``.

    ``live`` is the deployment path: Dagster resolves the reference from the run's own
    ``os.environ`` when the run starts (an explicit mapping could not be resolved, so it
    gives literals). An unset variable keeps the literal default, because an ``EnvVar``
    of an unset variable fails the run and has no default of its own.
    """
    if live and name in env:
        return EnvVar(name)
    return env.get(name, default)


def _int_setting(env: Mapping[str, str], name: str, default: int, live: bool) -> int:
    """:func:`_setting` for an int field (``EnvVar.int``, resolved and checked at run start)."""
    if live and name in env:
        return EnvVar.int(name)
    return int(env.get(name, str(default)))


def _key_vault(party: str, state_dir: str, env: Mapping[str, str], live: bool) -> KeyVault:
    """``party``'s vault; its own ``TG_KEY_DIR_<PARTY>``, when set, as a :func:`_setting`
    (the ``TG_KEY_DIR/<party>`` and state-directory defaults are derived at load)."""
    vault = party_key_vault(party, state_dir, dict(env))
    own = party_variable(PARTY_KEY_DIR_ENV, party)
    if live and env.get(own):
        return KeyVault(party=party, key_dir=EnvVar(own), dev_master_file=vault.dev_master_file)
    return vault


def build_resources(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The resource instances the assets use.

    Without ``environ`` (the code locations, i.e. the deployment path) every set ``TG_*``
    variable below is an :class:`~dagster.EnvVar` reference resolved when a run starts;
    such resources are for Dagster runs only, and using one outside a run raises (code
    that reads a resource directly, like ``make demo``'s site list, passes
    ``os.environ``). With ``environ`` every value is a literal. Either way, values derived
    from another variable (the state directory beside ``TG_ARTIFACT_ROOT`` and the paths
    under it) are computed when the definitions load, and ``TG_IDENTITY_EXPIRY_WARNING_DAYS``
    stays a literal: Dagster has no ``EnvVar`` for floats.

    ``TG_ARTIFACT_ROOT`` (default ``.tensorguard/artifacts`` under the working directory)
    is where artifacts live. Each key-holding party has its own vault: ``site_keys``
    (sites' signing and X-Wing keys, pair secrets), ``custodian_keys`` (the CKKS secret,
    the custodian's ledger key), ``release_keys`` (the release signing key), each in
    ``TG_KEY_DIR_<PARTY>`` (default ``.tensorguard/keys/<party>``) under its own master;
    the aggregator gets no vault. ``TG_SITES_FILE`` names the site registry (default:
    the shipped demo sites); ``TG_FLEET``, ``TG_CHANNEL``, ``TG_REGISTRY_ROOT``, ``DATABASE_URL``,
    ``TG_FLEET_RECIPIENTS_DIR``, ``TG_MQTT_HOST``, ``TG_MQTT_PORT`` and
    ``TG_RELEASE_KEY_NAME`` and ``TG_FLEET_SERVICE_URL`` describe the fleet.
    ``TG_IDENTITY_CA_DIR``, ``TG_IDENTITY_RENEWAL_CONFIG`` and
    ``TG_IDENTITY_EXPIRY_WARNING_DAYS`` configure ``fleet_identity`` (docs/IDENTITY.md).
    ``verified_artifacts`` loads upstream artifacts as asset inputs (re-hashed against
    their recorded digests; :mod:`tensorguard_assets.artifact_inputs`).
    Secrets are not read here: resources validate them when a run starts, so the
    definitions load anywhere. The production gates (:class:`TensorGuardRuntime`,
    ``TG_SEED``) are nested in the artifact store and the fleet resource, which every
    asset uses, rather than being a resource the assets take and never read.
    """
    live = environ is None
    env = os.environ if environ is None else environ

    def setting(name: str, default: str) -> str:
        return _setting(env, name, default, live)

    artifact_root = artifact_root_setting(env)
    state_dir = os.path.dirname(artifact_root.rstrip("/")) or DEFAULT_STATE_DIR
    runtime = TensorGuardRuntime(seed=_int_setting(env, "TG_SEED", 0, live))
    return {
        "artifacts": ArtifactStore(
            base_uri=setting("TG_ARTIFACT_ROOT", artifact_root), runtime=runtime
        ),
        "site_keys": _key_vault("sites", state_dir, env, live),
        "custodian_keys": _key_vault("custodian", state_dir, env, live),
        "release_keys": _key_vault("release", state_dir, env, live),
        "sites": SiteRegistry(sites_file=setting("TG_SITES_FILE", "")),
        VERIFIED_ARTIFACTS: VerifiedArtifacts(),
        "fleet": FleetResource(
            runtime=runtime,
            fleet=setting("TG_FLEET", "demo"),
            channel=setting("TG_CHANNEL", "stable"),
            registry_root=setting("TG_REGISTRY_ROOT", os.path.join(state_dir, "registry")),
            development_database_url=f"sqlite:///{os.path.abspath(state_dir)}/tensorguard.db",
            recipients_dir=setting(
                "TG_FLEET_RECIPIENTS_DIR", os.path.join(state_dir, "fleet-recipients")
            ),
            mqtt_host=setting("TG_MQTT_HOST", ""),
            mqtt_port=_int_setting(env, "TG_MQTT_PORT", 1883, live),
            mqtt_username=setting("TG_MQTT_USERNAME", ""),
            mqtt_tls_ca_file=setting("TG_MQTT_CA_FILE", ""),
            mqtt_tls_cert_file=setting("TG_MQTT_CERT_FILE", ""),
            mqtt_tls_key_file=setting("TG_MQTT_KEY_FILE", ""),
            release_key_name=setting("TG_RELEASE_KEY_NAME", "release-signing"),
            service_url=setting("TG_FLEET_SERVICE_URL", ""),
        ),
        # Fleet identity (docs/IDENTITY.md): the CA directory, ACME renewals, expiry window.
        "fleet_identity": FleetIdentity(
            ca_dir=setting("TG_IDENTITY_CA_DIR", os.path.join(state_dir, "identity", "ca")),
            renewal_config=setting("TG_IDENTITY_RENEWAL_CONFIG", ""),
            # a float: no EnvVar for it in Dagster, so the value at load is kept
            expiry_warning_days=float(env.get("TG_IDENTITY_EXPIRY_WARNING_DAYS", "7")),
        ),
    }
