"""Edge agent configuration (YAML), and loading the agent's trust store and recipient key.

Example ``agent.yaml``::

    node_id: robot-7
    fleet: plant-a
    channels: [stable]
    state_dir: /var/lib/tensorguard-agent
    trust_store: /etc/tensorguard/trust-store.json
    recipient_key_file: /etc/tensorguard/robot-7.xwing.key   # or recipient_key_name
    mqtt: {host: broker.plant-a.example, port: 8883, username: robot-7,
           tls_ca_file: /etc/tensorguard/ca.pem}
    service_url: https://fleet.plant-a.example:8443          # optional, with node_key_file
    node_key_file: /etc/tensorguard/robot-7.ed25519.pem       # enrolled signing key, 0600
    service_tls_ca_file: /var/lib/tensorguard/node/ca.pem     # https: the fleet CA root
    service_tls_cert_file: /var/lib/tensorguard/node/tls.crt  # https: mutual TLS with the
    service_tls_key_file: /var/lib/tensorguard/node/tls.key   # node's enrolled certificate

The MQTT password is never written in the file: the agent reads it from
``TG_MQTT_PASSWORD`` when its session starts (a file with ``mqtt.password`` is refused).
With per-node ACLs the username is the node id (docs/FLEET.md, "Broker access").

Exactly one of ``recipient_key_file`` (a ``tensorguard-key`` file, mode 0600) and
``recipient_key_name`` (an X-Wing key stored in the key provider selected by
``TG_KEY_PROVIDER``, purpose ``xwing-kem``) must be set.

``service_url`` and ``node_key_file`` (set both or neither) connect the agent to the
fleet service (``tensorguard serve``): it downloads ``http(s)`` package locations from
that service only, signing each request with the Ed25519 key it enrolled, and posts its
install outcomes and heartbeats there (MQTT reporting stays). With an ``https`` URL,
``service_tls_ca_file`` pins the CA that issued the service's certificate (default: the
system store) and ``service_tls_cert_file`` with ``service_tls_key_file`` (both or
neither) present the node's enrolled certificate — the three files `tensorguard agent
enrol --install-cert` printed — to a service that requires mutual TLS. TLS files with an
``http`` URL are refused (they would not be used).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tensorguard.codec import CodecError, load_strict_yaml
from tensorguard.crypto import XWingPrivateKey
from tensorguard.errors import TensorGuardError
from tensorguard.fleet.errors import AgentConfigError
from tensorguard.fleet.messages import Name
from tensorguard.fleet.mqtt import MQTT_PASSWORD_ENV, MqttSettings
from tensorguard.gate.errors import validate_or_raise
from tensorguard.keys import key_provider_from_env
from tensorguard.service.client import FleetClientError, client_tls_context, service_base_url
from tensorguard.service.node_key import NodeKeyError, load_node_key
from tensorguard.tgsp import TrustStore, load_recipient_private_key

DEFAULT_MAX_PACKAGE_BYTES = 8 * 1024**3


class AgentConfig(BaseModel):
    """Who the node is, what it follows, where it keeps state, and whom it trusts."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    node_id: Name
    fleet: Name
    channels: Annotated[tuple[Name, ...], Field(min_length=1)]
    state_dir: Path
    trust_store: Path
    recipient_key_file: Path | None = None
    recipient_key_name: str | None = None
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    max_package_bytes: Annotated[int, Field(ge=1)] = DEFAULT_MAX_PACKAGE_BYTES
    service_url: str | None = None
    node_key_file: Path | None = None
    service_tls_ca_file: Path | None = None
    service_tls_cert_file: Path | None = None
    service_tls_key_file: Path | None = None
    # refuse a first install on a channel unless the announcement carries a valid signed
    # freshness statement (docs/FLEET.md); statements that are present are always checked.
    # Unset: required in production (TG_ENVIRONMENT=production), not in development.
    require_freshness: bool | None = None

    @field_validator("channels")
    @classmethod
    def _channels_are_unique(cls, channels: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(channels)) != len(channels):
            raise ValueError("a channel is listed more than once")
        return channels

    @field_validator("mqtt")
    @classmethod
    def _no_password_in_file(cls, mqtt: MqttSettings) -> MqttSettings:
        if mqtt.password is not None:
            raise ValueError(
                "the MQTT password must not be written in the configuration file; remove "
                f"mqtt.password and give the agent {MQTT_PASSWORD_ENV} in its environment"
            )
        return mqtt

    @field_validator("service_url")
    @classmethod
    def _service_url_is_plain(cls, url: str | None) -> str | None:
        if url is None:
            return None
        try:
            return service_base_url(url)
        except FleetClientError as exc:
            raise ValueError(str(exc)) from None

    @model_validator(mode="after")
    def _service_needs_a_key(self) -> AgentConfig:
        if (self.service_url is None) != (self.node_key_file is None):
            raise ValueError(
                "set both service_url and node_key_file (the fleet service and the Ed25519 "
                "key this node enrolled there), or neither"
            )
        return self

    @model_validator(mode="after")
    def _service_tls_needs_https(self) -> AgentConfig:
        if (self.service_tls_cert_file is None) != (self.service_tls_key_file is None):
            raise ValueError(
                "set both service_tls_cert_file and service_tls_key_file (the node's enrolled "
                "tls.crt and tls.key), or neither"
            )
        uses_tls = self.service_tls_ca_file is not None or self.service_tls_cert_file is not None
        if uses_tls and (self.service_url is None or not self.service_url.startswith("https://")):
            raise ValueError(
                "service_tls_* files are set but service_url is not https://; use the fleet "
                "service's https URL (a certificate is never sent over plain http)"
            )
        return self

    @model_validator(mode="after")
    def _one_recipient_key_source(self) -> AgentConfig:
        if (self.recipient_key_file is None) == (self.recipient_key_name is None):
            raise ValueError(
                "set exactly one of recipient_key_file and recipient_key_name (the key that "
                "opens packages addressed to this node)"
            )
        return self


def parse_agent_config(document: object, source: str = "agent configuration") -> AgentConfig:
    """Validate an agent configuration mapping."""
    return validate_or_raise(
        AgentConfig,
        document,
        AgentConfigError,
        f"{source} is invalid",
        "Fix the file; unknown keys are rejected",
    )


def load_agent_config(path: Path) -> AgentConfig:
    """Read and validate a YAML agent configuration file."""
    try:
        document = load_strict_yaml(
            path.read_text(encoding="utf-8"), what=f"agent configuration {path}"
        )
    except OSError as exc:
        raise AgentConfigError(
            f"cannot read agent configuration {path}: {exc.strerror or exc}"
        ) from exc
    except CodecError as exc:
        raise AgentConfigError(f"{exc}; fix the file (each key may appear once)") from exc
    return parse_agent_config(document, str(path))


def load_trust_store(config: AgentConfig) -> TrustStore:
    """The pinned producer keys; an empty trust store is refused (it would reject all)."""
    try:
        store = TrustStore.load(config.trust_store)
    except TensorGuardError as exc:
        raise AgentConfigError(f"cannot load the agent's trust store: {exc}") from exc
    if len(store) == 0:
        raise AgentConfigError(
            f"trust store {config.trust_store} pins no keys; add the release signer's public "
            "key to it"
        )
    return store


def load_recipient_key(config: AgentConfig) -> XWingPrivateKey:
    """The node's X-Wing private key, from its key file or from the key provider."""
    if config.recipient_key_file is not None:
        try:
            return load_recipient_private_key(config.recipient_key_file)
        except TensorGuardError as exc:
            raise AgentConfigError(f"cannot load the agent's recipient key: {exc}") from exc
    name = config.recipient_key_name
    if name is None:  # excluded by AgentConfig's validator
        raise AgentConfigError("no recipient key configured")
    try:
        with key_provider_from_env(os.environ, allow_ephemeral=False) as provider:
            return provider.kem_private_key(name)
    except TensorGuardError as exc:
        raise AgentConfigError(
            f"cannot load recipient key {name!r} from the key provider: {exc}"
        ) from exc


def load_signing_key(config: AgentConfig) -> Ed25519PrivateKey | None:
    """The node's request-signing key for the fleet service, or None without a service."""
    if config.node_key_file is None:
        return None
    try:
        return load_node_key(config.node_key_file)
    except NodeKeyError as exc:
        raise AgentConfigError(f"cannot load the agent's node key: {exc}") from exc


def service_tls_context(config: AgentConfig) -> ssl.SSLContext | None:
    """The TLS context for the fleet service (CA pin, node certificate), or None when
    ``config`` names no ``service_tls_*`` file."""
    if config.service_tls_ca_file is None and config.service_tls_cert_file is None:
        return None
    try:
        return client_tls_context(
            config.service_tls_ca_file, config.service_tls_cert_file, config.service_tls_key_file
        )
    except FleetClientError as exc:
        raise AgentConfigError(f"cannot set up TLS to the fleet service: {exc}") from exc
