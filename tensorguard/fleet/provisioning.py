"""Enrol an edge node: its recipient key pair, trust store and agent configuration.

A node holds its X-Wing private key (0600) and a trust store pinning the release
signing key; the publisher holds only the node's public key. ``provision_edge_node``
writes all three for one node into a directory, which is how the demo round gives
its local edge node what ``tensorguard agent run`` needs. In a real fleet the private
key is generated on the device (or in its TPM/HSM) and only the public key travels.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tensorguard.crypto.composite import CompositeVerifyKey
from tensorguard.crypto.xwing import XWingPrivateKey
from tensorguard.durable import atomic_write_bytes
from tensorguard.fleet.errors import FleetError
from tensorguard.tgsp.keyfiles import write_key_file
from tensorguard.tgsp.trust import TrustStore

PUBLIC_KEY_SUFFIX = ".xwing.pub"


@dataclass(frozen=True)
class ProvisionedNode:
    """Files written for one edge node."""

    node_id: str
    private_key_file: Path
    public_key_file: Path
    trust_store_file: Path
    agent_config_file: Path


def provision_edge_node(
    node_dir: Path,
    recipients_dir: Path,
    *,
    node_id: str,
    fleet: str,
    channel: str,
    release_key: CompositeVerifyKey,
    mqtt_host: str = "127.0.0.1",
    mqtt_port: int = 1883,
) -> ProvisionedNode:
    """Create ``node_id``'s key pair, trust store and ``agent.yaml`` in ``node_dir``.

    The public key is also written to ``recipients_dir`` (as ``<node_id>.xwing.pub``),
    where the packager reads the fleet's recipients. Existing files are never
    overwritten: enrolling a node twice is an error.
    """
    public_key_file = recipients_dir / f"{node_id}{PUBLIC_KEY_SUFFIX}"
    private_key_file = node_dir / f"{node_id}.xwing.key"
    if public_key_file.exists() or private_key_file.exists():
        raise FleetError(
            f"edge node {node_id!r} is already enrolled ({public_key_file}); remove its "
            "files first to re-enrol it with a new key"
        )
    node_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    recipients_dir.mkdir(parents=True, exist_ok=True)
    private_key = XWingPrivateKey.generate()
    write_key_file(private_key_file, private_key)
    write_key_file(public_key_file, private_key.public_key())
    trust_store_file = node_dir / "trust-store.json"
    TrustStore([release_key], labels={release_key.fingerprint(): "release"}).save(trust_store_file)
    agent_config_file = node_dir / "agent.yaml"
    agent_config = {
        "node_id": node_id,
        "fleet": fleet,
        "channels": [channel],
        "state_dir": str(node_dir / "state"),
        "trust_store": str(trust_store_file),
        "recipient_key_file": str(private_key_file),
        "mqtt": {"host": mqtt_host, "port": mqtt_port},
    }
    atomic_write_bytes(agent_config_file, yaml.safe_dump(agent_config, sort_keys=False).encode())
    return ProvisionedNode(
        node_id=node_id,
        private_key_file=private_key_file,
        public_key_file=public_key_file,
        trust_store_file=trust_store_file,
        agent_config_file=agent_config_file,
    )
