"""The fleet resource: registry, application database, MQTT broker and recipients."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext

from tensorguard.crypto import XWingPublicKey
from tensorguard.errors import ConfigurationError, TensorGuardError
from tensorguard.fleet.db import FleetDatabase, migrate
from tensorguard.fleet.mqtt import MqttSettings, pipeline_mqtt_settings
from tensorguard.fleet.provisioning import PUBLIC_KEY_SUFFIX
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.production import is_production
from tensorguard.service.client import service_base_url
from tensorguard.tgsp import load_recipient_public_key
from tensorguard_resources.failures import fail_closed
from tensorguard_resources.runtime import TensorGuardRuntime
from tensorguard_resources.settings import resolved

DATABASE_URL_ENV = "DATABASE_URL"
"""The application database URL (it carries the database password in production). It is
read from the run's environment when needed and is never part of the resource's config."""


class FleetResource(ConfigurableResource):
    """Where releases go and who receives them.

    ``registry_root`` is the local directory registry; the application database (migrated
    when a run starts) is ``DATABASE_URL`` from the run's environment, or
    ``development_database_url`` (a local SQLite file) when that is unset outside
    production. ``mqtt_host`` empty means no broker is configured, which production
    refuses; ``mqtt_username``, ``mqtt_tls_ca_file`` and the client certificate
    ``mqtt_tls_cert_file``/``mqtt_tls_key_file`` authenticate the pipeline to it, with the
    password taken from ``TG_MQTT_PASSWORD`` when the run needs it. ``recipients_dir``
    holds one ``<node>.xwing.pub`` file per edge node that may open packages.
    ``release_key_name`` names the composite signing key in the key vault that signs
    packages (rotate it by enrolling a new key and updating the nodes' trust stores).
    ``service_url`` (``TG_FLEET_SERVICE_URL``, e.g. ``https://fleet.example:8443``) is the
    fleet service (``tensorguard serve``) nodes download packages from; when set,
    releases are recorded and announced with their URL there instead of a ``file://`` URI.
    ``runtime`` is the nested :class:`TensorGuardRuntime`, so publication passes the
    production gates too.

    No field holds a secret: Dagster shows resource config in its UI and stores it in
    job snapshots, so secrets are read from the environment at run time only.
    """

    runtime: TensorGuardRuntime
    fleet: str
    channel: str
    registry_root: str
    development_database_url: str
    recipients_dir: str
    mqtt_host: str = ""
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_tls_ca_file: str = ""
    mqtt_tls_cert_file: str = ""
    mqtt_tls_key_file: str = ""
    release_key_name: str = "release-signing"
    service_url: str = ""

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Check the broker settings and migrate the application database; in production
        require a broker and ``DATABASE_URL``."""
        del context  # Dagster's resource hook signature
        try:
            if is_production() and not self.mqtt_host:
                raise ConfigurationError(
                    "TG_MQTT_HOST is not set: production releases must notify the fleet; "
                    "set TG_MQTT_HOST (and TG_MQTT_PORT) to the Mosquitto broker"
                )
            # Refuses inconsistent MQTT settings before any work rather than at release.
            _ = self.mqtt
            if self.service_url:
                service_base_url(self.service_url)  # http(s)://host[:port] or refused now
            migrate(self.database_url)
        except TensorGuardError as exc:
            raise fail_closed(exc, step="fleet") from None

    @property
    def database_url(self) -> str:
        """The application database URL, read from ``DATABASE_URL`` now (a secret: never
        log it; :func:`tensorguard.fleet.db.safe_url` masks the password)."""
        url = os.environ.get(DATABASE_URL_ENV, "")
        if url:
            return url
        if is_production():
            raise ConfigurationError(
                f"{DATABASE_URL_ENV} is not set: production keeps edge nodes, releases and "
                f"install reports in its own database; set {DATABASE_URL_ENV} in the run's "
                "environment, e.g. postgresql://tg:PASSWORD@db:5432/tensorguard"
            )
        return self.development_database_url

    @property
    def registry(self) -> LocalRegistry:
        """The release registry."""
        return LocalRegistry(Path(resolved(self.registry_root, "FleetResource.registry_root")))

    def database(self) -> FleetDatabase:
        """A handle on the application database (close it when done)."""
        return FleetDatabase(self.database_url)

    @property
    def mqtt(self) -> MqttSettings | None:
        """Broker settings with the password read from ``TG_MQTT_PASSWORD`` now, or None
        when no broker is configured (development only)."""
        if not self.mqtt_host:
            return None
        return pipeline_mqtt_settings(
            self.mqtt_host,
            self.mqtt_port,
            username=self.mqtt_username,
            tls_ca_file=self.mqtt_tls_ca_file,
            tls_cert_file=self.mqtt_tls_cert_file,
            tls_key_file=self.mqtt_tls_key_file,
        )

    def recipient_keys(self) -> dict[str, XWingPublicKey]:
        """Each enrolled node's public key, by node id (file name stem)."""
        directory = Path(resolved(self.recipients_dir, "FleetResource.recipients_dir"))
        if not directory.is_dir():
            return {}
        return {
            path.name.removesuffix(PUBLIC_KEY_SUFFIX): load_recipient_public_key(path)
            for path in sorted(directory.glob(f"*{PUBLIC_KEY_SUFFIX}"))
        }
