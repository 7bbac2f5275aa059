"""Session-wide fixtures: real services and a clean TensorGuard environment."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.services.mosquitto import MosquittoBroker, running_mosquitto
from tests.services.postgres import PostgresServer, running_postgres


@pytest.fixture(autouse=True)
def clean_tensorguard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from development mode, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.startswith("TG_") or name in {"DATABASE_URL", "DAGSTER_HOME"}:
            monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1, started once per test session."""
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto_broker() -> Iterator[MosquittoBroker]:
    """A real Mosquitto broker on 127.0.0.1 and a free port, started once per session."""
    with running_mosquitto() as broker:
        yield broker


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Start every test without a leftover Dagster definitions-state storage.

    Entering a DagsterInstance puts its defs-state storage in a context variable that
    definitions loading consults; an instance closed by an earlier test can leave a
    dead reference there, which makes the next ``Definitions`` load fail with
    "undefined DagsterInstance weakref". A fresh test process has none, so neither
    should a test (private dagster API: there is no public reset).
    """
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)
