"""Fleet fixtures: a real Mosquitto broker for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.mosquitto import MosquittoBroker, running_mosquitto


@pytest.fixture(scope="session")
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """A real Mosquitto broker on 127.0.0.1 and a free port, started once per session."""
    with running_mosquitto() as broker:
        yield broker
