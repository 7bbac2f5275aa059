"""Fixtures: one real fleet service per test session, and enrolled edge nodes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.service.fleet_server import EdgeNode, FleetServer, running_fleet_server
from tests.services.postgres import PostgresServer, fresh_database

# Generous limits: the shared server must not throttle the other tests.
SHARED_ENV = {"TG_RATE_LIMIT_PER_MINUTE": "1000000", "TG_RATE_LIMIT_BURST": "100000"}


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def fleet_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FleetServer]:
    """A running ``tensorguard serve`` on loopback, on a temporary SQLite database or a
    fresh database on the test PostgreSQL (every test using it runs on both)."""
    tmp = tmp_path_factory.mktemp("fleet-service")
    if request.param == "sqlite":
        with running_fleet_server(tmp, SHARED_ENV) as server:
            yield server
        return
    postgres: PostgresServer = request.getfixturevalue("postgres_server")
    with (
        fresh_database(postgres, "service") as url,
        running_fleet_server(tmp, {**SHARED_ENV, "DATABASE_URL": url}) as server,
    ):
        yield server


def enrol(server: FleetServer, node: EdgeNode) -> EdgeNode:
    """Enrol ``node`` with an operator token; fail the test if refused."""
    response = server.post_json("/v1/nodes", node.enrolment(), token=server.token())
    assert response.status_code == 201, response.text
    return node


@pytest.fixture
def node(fleet_server: FleetServer) -> EdgeNode:
    """A freshly enrolled edge node in the ``canary`` cohort."""
    return enrol(fleet_server, EdgeNode.new())


@pytest.fixture
def other_node(fleet_server: FleetServer) -> EdgeNode:
    """A second enrolled node (for cross-node attacks)."""
    return enrol(fleet_server, EdgeNode.new())
