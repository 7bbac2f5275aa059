"""Test helpers: real TGSP release packages, a registry, and agent configurations."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.fleet.agent import EdgeAgent
from tensorguard.fleet.agent_config import AgentConfig, parse_agent_config
from tensorguard.fleet.messages import ReleaseAnnouncement
from tensorguard.fleet.notify import announcement_for
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.tgsp import ModelIdentity, ReleaseInfo, TrustStore, build_package
from tensorguard.tgsp._keyfiles import write_key_file


@dataclass(frozen=True)
class Keys:
    """The release signer, a stranger, this node's recipient key and another node's."""

    producer: CompositeSigningKey
    stranger: CompositeSigningKey
    node: XWingPrivateKey
    other_node: XWingPrivateKey


def release_files(version: int) -> dict[str, bytes]:
    """Distinct, version-dependent contents for a release tree."""
    return {
        "adapter/adapter_config.json": f'{{"r": 8, "version": {version}}}'.encode(),
        "adapter/adapter_model.safetensors": secrets.token_bytes(2048),
        "gate_decision.json": f'{{"passed": true, "version": {version}}}'.encode(),
    }


@dataclass
class FleetKit:
    """A registry, signing and recipient keys on disk, and a way to build releases."""

    root: Path
    keys: Keys
    fleet: str = field(default_factory=lambda: f"fleet-{secrets.token_hex(4)}")
    channel: str = "stable"

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.registry = LocalRegistry(self.root / "registry")
        self.trust_store_path = self.root / "trust-store.json"
        TrustStore([self.keys.producer.public_key()]).save(self.trust_store_path)
        self.node_key_path = self.root / "node.key"
        write_key_file(self.node_key_path, self.keys.node)
        self._built = 0

    def build(
        self,
        version: int,
        *,
        signer: CompositeSigningKey | None = None,
        recipient: XWingPrivateKey | None = None,
        channel: str | None = None,
        created_at: int | None = None,
        expires_at: int | None = None,
    ) -> Path:
        """Build a real TGSP package (signed, encrypted) and return its path."""
        now = int(time.time())
        source = self.root / "sources" / f"v{version}-{self._built}"
        for relative, content in release_files(version).items():
            target = source / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        output = self.root / "built" / f"v{version}-{self._built}.tgsp"
        output.parent.mkdir(parents=True, exist_ok=True)
        self._built += 1
        release = ReleaseInfo(
            channel=channel or self.channel,
            version=version,
            created_at=now - 60 if created_at is None else created_at,
            expires_at=now + 3600 if expires_at is None else expires_at,
            model=ModelIdentity("demo-adapter", "ab" * 32),
            gate_decision_digest="cd" * 32,
        )
        build_package(
            source,
            output,
            signer=signer or self.keys.producer,
            recipients=[(recipient or self.keys.node).public_key()],
            release=release,
        )
        return output

    def publish(self, package: Path, version: int) -> ReleaseAnnouncement:
        """Publish ``package`` to the registry; return its announcement."""
        record = self.registry.publish(package, self.channel, version)
        return announcement_for(self.registry, record, self.fleet)

    def config(self, state_dir: Path, **overrides: Any) -> AgentConfig:
        document: dict[str, Any] = {
            "node_id": "robot-1",
            "fleet": self.fleet,
            "channels": [self.channel],
            "state_dir": str(state_dir),
            "trust_store": str(self.trust_store_path),
            "recipient_key_file": str(self.node_key_path),
        }
        document.update(overrides)
        return parse_agent_config(document)

    def agent(self, state_dir: Path, **overrides: Any) -> EdgeAgent:
        return EdgeAgent.from_config(self.config(state_dir, **overrides))
