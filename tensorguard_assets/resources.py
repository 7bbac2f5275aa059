"""Resources for each environment, chosen in one place from ``TG_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tensorguard_assets.artifact_inputs import VERIFIED_ARTIFACTS, VerifiedArtifacts
from tensorguard_resources import ArtifactStore, SiteRegistry, TensorGuardRuntime
from tensorguard_resources.fleet import FleetResource
from tensorguard_resources.identity import FleetIdentity
from tensorguard_resources.keys import party_key_vault

DEFAULT_STATE_DIR = ".tensorguard"


def artifact_root_setting(environ: Mapping[str, str] | None = None) -> str:
    """The artifact store's base URI: ``TG_ARTIFACT_ROOT``, else ``.tensorguard/artifacts``."""
    env = os.environ if environ is None else environ
    return env.get("TG_ARTIFACT_ROOT", f"{DEFAULT_STATE_DIR}/artifacts")


def build_resources(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The resource instances the assets use.

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
    env = os.environ if environ is None else environ
    artifact_root = artifact_root_setting(env)
    state_dir = os.path.dirname(artifact_root.rstrip("/")) or DEFAULT_STATE_DIR
    runtime = TensorGuardRuntime(seed=int(env.get("TG_SEED", "0")))
    return {
        "artifacts": ArtifactStore(base_uri=artifact_root, runtime=runtime),
        "site_keys": party_key_vault("sites", state_dir, dict(env)),
        "custodian_keys": party_key_vault("custodian", state_dir, dict(env)),
        "release_keys": party_key_vault("release", state_dir, dict(env)),
        "sites": SiteRegistry(sites_file=env.get("TG_SITES_FILE", "")),
        VERIFIED_ARTIFACTS: VerifiedArtifacts(),
        "fleet": FleetResource(
            runtime=runtime,
            fleet=env.get("TG_FLEET", "demo"),
            channel=env.get("TG_CHANNEL", "stable"),
            registry_root=env.get("TG_REGISTRY_ROOT", os.path.join(state_dir, "registry")),
            development_database_url=f"sqlite:///{os.path.abspath(state_dir)}/tensorguard.db",
            recipients_dir=env.get(
                "TG_FLEET_RECIPIENTS_DIR", os.path.join(state_dir, "fleet-recipients")
            ),
            mqtt_host=env.get("TG_MQTT_HOST", ""),
            mqtt_port=int(env.get("TG_MQTT_PORT", "1883")),
            mqtt_username=env.get("TG_MQTT_USERNAME", ""),
            mqtt_tls_ca_file=env.get("TG_MQTT_CA_FILE", ""),
            mqtt_tls_cert_file=env.get("TG_MQTT_CERT_FILE", ""),
            mqtt_tls_key_file=env.get("TG_MQTT_KEY_FILE", ""),
            release_key_name=env.get("TG_RELEASE_KEY_NAME", "release-signing"),
            service_url=env.get("TG_FLEET_SERVICE_URL", ""),
        ),
        # Fleet identity (docs/IDENTITY.md): the CA directory, ACME renewals, expiry window.
        "fleet_identity": FleetIdentity(
            ca_dir=env.get("TG_IDENTITY_CA_DIR", os.path.join(state_dir, "identity", "ca")),
            renewal_config=env.get("TG_IDENTITY_RENEWAL_CONFIG", ""),
            expiry_warning_days=float(env.get("TG_IDENTITY_EXPIRY_WARNING_DAYS", "7")),
        ),
    }
