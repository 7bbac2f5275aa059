"""The demo's edge node is enrolled by the node-side code: keys stay in its directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.fleet.agent_config import load_agent_config, load_recipient_key
from tensorguard.fleet.errors import FleetError
from tensorguard.fleet.provisioning import provision_edge_node
from tensorguard.tgsp._keyfiles import load_recipient_public_key


def test_the_demo_node_makes_its_keys_and_publishes_only_the_public_one(tmp_path: Path) -> None:
    node_dir, recipients = tmp_path / "edge" / "demo-node", tmp_path / "recipients"
    node = provision_edge_node(
        node_dir,
        recipients,
        node_id="demo-node",
        fleet="plant-a",
        channel="stable",
        release_key=CompositeSigningKey.generate().public_key(),
    )
    assert [p.name for p in recipients.iterdir()] == ["demo-node.xwing.pub"]
    assert node.private_key_file.parent == node_dir
    config = load_agent_config(node.agent_config_file)
    private = load_recipient_key(config)
    published = load_recipient_public_key(node.public_key_file)
    assert published.public_bytes() == private.public_key().public_bytes()
    seed = private.private_bytes()
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and node_dir not in p.parents]
    assert outside
    assert not any(seed in p.read_bytes() or seed.hex().encode() in p.read_bytes() for p in outside)
    assert (node_dir / "tls.key").exists()  # the node could enrol with the fleet CA as is
    with pytest.raises(FleetError, match="already enrolled"):
        provision_edge_node(
            node_dir,
            recipients,
            node_id="demo-node",
            fleet="plant-a",
            channel="stable",
            release_key=CompositeSigningKey.generate().public_key(),
        )
