"""The fleet resource: registry, application database, MQTT broker and recipients."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext

from tensorguard.crypto.xwing import XWingPublicKey
from tensorguard.errors import ConfigurationError, TensorGuardError
from tensorguard.fleet.db import FleetDatabase, migrate
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.provisioning import PUBLIC_KEY_SUFFIX
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.production import is_production
from tensorguard.tgsp.keyfiles import load_recipient_public_key
from tensorguard_resources.failures import fail_closed
from tensorguard_resources.runtime import TensorGuardRuntime


class FleetResource(ConfigurableResource):
    """Where releases go and who receives them.

    ``registry_root`` is the local directory registry; ``database_url`` the application
    database (migrated when a run starts); ``mqtt_host`` empty means no broker is
    configured, which production refuses. ``recipients_dir`` holds one
    ``<node>.xwing.pub`` file per edge node that may open packages.
    ``release_key_name`` names the composite signing key in the key vault that signs
    packages (rotate it by enrolling a new key and updating the nodes' trust stores).
    ``runtime`` is the nested :class:`TensorGuardRuntime`, so publication passes the
    production gates too.
    """

    runtime: TensorGuardRuntime
    fleet: str
    channel: str
    registry_root: str
    database_url: str
    recipients_dir: str
    mqtt_host: str = ""
    mqtt_port: int = 1883
    release_key_name: str = "release-signing"

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Migrate the application database; in production require a broker."""
        del context  # Dagster's resource hook signature
        try:
            if is_production() and not self.mqtt_host:
                raise ConfigurationError(
                    "TG_MQTT_HOST is not set: production releases must notify the fleet; "
                    "set TG_MQTT_HOST (and TG_MQTT_PORT) to the Mosquitto broker"
                )
            migrate(self.database_url)
        except TensorGuardError as exc:
            raise fail_closed(exc, step="fleet") from None

    @property
    def registry(self) -> LocalRegistry:
        """The release registry."""
        return LocalRegistry(Path(self.registry_root))

    def database(self) -> FleetDatabase:
        """A handle on the application database (close it when done)."""
        return FleetDatabase(self.database_url)

    @property
    def mqtt(self) -> MqttSettings | None:
        """Broker settings, or None when no broker is configured (development only)."""
        return MqttSettings(host=self.mqtt_host, port=self.mqtt_port) if self.mqtt_host else None

    def recipient_keys(self) -> dict[str, XWingPublicKey]:
        """Each enrolled node's public key, by node id (file name stem)."""
        directory = Path(self.recipients_dir)
        if not directory.is_dir():
            return {}
        return {
            path.name.removesuffix(PUBLIC_KEY_SUFFIX): load_recipient_public_key(path)
            for path in sorted(directory.glob(f"*{PUBLIC_KEY_SUFFIX}"))
        }
