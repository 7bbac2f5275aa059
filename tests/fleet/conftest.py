"""Fleet fixtures: a real Mosquitto broker, release keys, a registry with real packages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tests.fleet.releases import FleetKit, Keys
from tests.services.mosquitto import MosquittoBroker, running_mosquitto


@pytest.fixture(scope="session")
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """A real Mosquitto broker on 127.0.0.1 and a free port, started once per session."""
    with running_mosquitto() as broker:
        yield broker


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
