"""Session-wide fixtures: real services and a clean TensorGuard environment."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests.round_start import TEST_ROUND_START
from tests.services.mosquitto import BrokerAccess, MosquittoBroker, running_mosquitto
from tests.services.postgres import PostgresServer, running_postgres

# Hypothesis profiles (HYPOTHESIS_PROFILE): "ci" is derandomised, so a CI failure is
# reproducible from the same commit and never flakes; "dev" (the default) draws new
# examples on every run and keeps failing ones in the local example database. Tests set
# their own max_examples; the profiles decide randomness, deadlines and reporting.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# The default TG_ROUND_START moves with the calendar (a week before today); the tests name
# rounds by date, so they pin the start. Set before any test module imports the
# partitions, and again for each test (and the processes it starts), below.
os.environ["TG_ROUND_START"] = TEST_ROUND_START


@pytest.fixture(autouse=True)
def clean_tensorguard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests start from development mode, whatever the developer's shell exports."""
    for name in list(os.environ):
        if name.startswith("TG_") or name in {"DATABASE_URL", "DAGSTER_HOME"}:
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TG_ROUND_START", TEST_ROUND_START)


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


FLEET_ACL_FILE = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto.acl"
SECURED_BROKER_USERS = ("tensorguard-pipeline", "robot-a", "robot-b")


@pytest.fixture(scope="session")
def secured_mosquitto_broker() -> Iterator[MosquittoBroker]:
    """Mosquitto refusing anonymous clients: a password file with the pipeline's user and
    nodes ``robot-a`` and ``robot-b`` (random passwords, in ``broker.access.users``) and
    the shipped fleet ACL, deploy/mosquitto.acl. Started once per session."""
    access = BrokerAccess(
        users={user: secrets.token_urlsafe(24) for user in SECURED_BROKER_USERS},
        acl_file=FLEET_ACL_FILE,
    )
    with running_mosquitto(access=access) as broker:
        yield broker


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup() -> None:
    """Start every test without a leftover Dagster definitions-state storage.

    Entering a DagsterInstance puts its defs-state storage in a context variable that
    definitions loading consults; an instance closed by an earlier test can leave a
    dead reference there, which makes the next ``Definitions`` load fail with
    "undefined DagsterInstance weakref". A fresh test process has none, so neither
    should a test (private dagster API: there is no public reset).
    """
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run the slow tests first, in their collected order.

    Under pytest-xdist (``make test`` runs two workers, one test file at a time each) the
    long end-to-end files then start at once and the many short files fill the gaps,
    instead of one long file starting last and running alone at the end.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
