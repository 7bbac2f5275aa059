"""Enrol an edge node: its recipient key pair, trust store and agent configuration.

A node holds its X-Wing private key (0600) and a trust store pinning the release
signing key; the publisher holds only the node's public key. ``provision_edge_node`` is
how the demo round gives its local edge node what ``tensorguard agent run`` needs: the
node's keys are made by the node-side enrolment code
(:func:`tensorguard.identity.enrol.enrol_node`, as ``tensorguard agent enrol`` does on a
device) in the node's directory, and only the public key is copied into the recipients
directory, as an operator would carry it. Real nodes enrol themselves (docs/IDENTITY.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from tensorguard.crypto import CompositeVerifyKey
from tensorguard.durable import DurableWriteError, atomic_copy, atomic_write_bytes
from tensorguard.fleet.errors import FleetError
from tensorguard.identity.enrol import enrol_node
from tensorguard.tgsp import TrustStore

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
    recipients_dir.mkdir(parents=True, exist_ok=True)
    # The node's side: its keys are made in its own directory; public files go out.
    request = enrol_node(node_dir, node_dir.parent / f"{node_id}.outbox", node_id=node_id)
    # The operator's side: only the public key reaches the publisher.
    try:
        atomic_copy(request.xwing_public_key_file, public_key_file)
    except DurableWriteError as exc:
        raise FleetError(f"cannot publish {node_id!r}'s public key: {exc}") from exc
    trust_store_file = node_dir / "trust-store.json"
    TrustStore([release_key], labels={release_key.fingerprint(): "release"}).save(trust_store_file)
    agent_config_file = node_dir / "agent.yaml"
    agent_config = {
        "node_id": node_id,
        "fleet": fleet,
        "channels": [channel],
        "state_dir": str(node_dir / "state"),
        "trust_store": str(trust_store_file),
        "recipient_key_file": str(request.xwing_key_file),
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
