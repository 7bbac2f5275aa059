"""Fleet fixtures: release keys and a registry with real packages.

The Mosquitto broker fixture (``mosquitto_broker``) is session-wide, in tests/conftest.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tests.fleet.releases import FleetKit, Keys


@pytest.fixture(scope="session")
def fleet_keys() -> Keys:
    """Real composite signing keys and X-Wing recipient keys, made once per session."""
    return Keys(
        producer=CompositeSigningKey.generate(),
        stranger=CompositeSigningKey.generate(),
        node=XWingPrivateKey.generate(),
        other_node=XWingPrivateKey.generate(),
    )


@pytest.fixture
def kit(tmp_path: Path, fleet_keys: Keys) -> FleetKit:
    """A fresh registry, trust store and node key file, with a unique fleet name."""
    return FleetKit(tmp_path / "kit", fleet_keys)
