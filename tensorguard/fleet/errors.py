"""Exception types raised by :mod:`tensorguard.fleet`."""

from __future__ import annotations

from tensorguard.errors import ConfigurationError, TensorGuardError


class FleetError(TensorGuardError):
    """Root of every deliberate failure in the fleet area."""


class FleetNameError(FleetError, ConfigurationError):
    """A fleet, channel or node name is not a safe topic segment and file name."""


class RegistryError(FleetError):
    """The release registry could not be read or written."""


class ReleaseVersionError(RegistryError):
    """A publish was refused because its version does not exceed the channel's latest."""


class RegistryCorruptError(RegistryError):
    """The registry index or a package in it does not match what was recorded."""


class FleetDatabaseError(FleetError):
    """The fleet application database could not be migrated or queried."""


class MqttError(FleetError):
    """The MQTT broker could not be reached, or a publish was not acknowledged."""


class AgentError(FleetError):
    """The edge agent could not run (configuration, state or broker problem)."""


class AgentConfigError(AgentError, ConfigurationError):
    """The edge agent's configuration is missing or invalid."""


class MqttConfigError(MqttError, ConfigurationError):
    """The MQTT settings are inconsistent or name files that cannot be used."""
