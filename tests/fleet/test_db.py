"""Fleet application database: Alembic migrations on SQLite and PostgreSQL, records."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from tensorguard.fleet.db import (
    FleetDatabase,
    current_revision,
    downgrade,
    head_revision,
    migrate,
    safe_url,
    sqlite_url,
)
from tensorguard.fleet.errors import FleetDatabaseError
from tensorguard.fleet.messages import InstallOutcome, InstallReason, InstallReport
from tensorguard.fleet.models import MIGRATION_VERSION_TABLE, Base
from tensorguard.fleet.registry import ReleaseRecord
from tests.services.postgres import PostgresServer, fresh_database

FLEET_TABLES = {
    "edge_nodes",
    "releases",
    "install_reports",
    "audit_log",
    "node_credentials",
    "request_nonces",
    "telemetry_samples",
    "revoked_tokens",
    "announcement_outbox",
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "fleet.db")
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    with fresh_database(server) as url:
        yield url


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def schema_differences(url: str) -> list[object]:
    """What Alembic autogenerate would change to make the database match the models."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection,
                opts={"version_table": MIGRATION_VERSION_TABLE, "compare_type": True},
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def test_migrations_apply_match_the_models_and_round_trip(database_url: str) -> None:
    assert current_revision(database_url) is None
    migrate(database_url)
    assert current_revision(database_url) == head_revision()
    assert FLEET_TABLES | {MIGRATION_VERSION_TABLE} <= table_names(database_url)
    assert schema_differences(database_url) == []
    downgrade(database_url, "base")
    assert current_revision(database_url) is None
    assert not FLEET_TABLES & table_names(database_url)
    migrate(database_url)
    assert current_revision(database_url) == head_revision()
    assert schema_differences(database_url) == []


def _record(version: int, channel: str = "stable") -> ReleaseRecord:
    return ReleaseRecord(
        channel=channel,
        version=version,
        digest=f"{version:064x}",
        size=1000 + version,
        published_at=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
        path=f"packages/{channel}/{channel}-{version}.tgsp",
    )


def _report(version: int, outcome: InstallOutcome, reason: InstallReason) -> InstallReport:
    return InstallReport(
        fleet="plant-a",
        channel="stable",
        node_id="robot-1",
        version=version,
        digest=f"{version:064x}",
        outcome=outcome,
        reason_code=reason,
        reason=f"{reason.value} for version {version}",
    )


def test_nodes_releases_reports_and_audit(database_url: str) -> None:
    migrate(database_url)
    database = FleetDatabase(database_url)
    try:
        database.require_current_schema()
        database.register_node(
            "robot-1", "plant-a", "stable", recipient_fingerprint="aa" * 32, actor="ops"
        )
        release = database.record_release(
            "plant-a",
            _record(1),
            "file:///r/stable-1.tgsp",
            gate_decision_digest="bb" * 32,
            actor="pipeline",
        )
        assert release.id is not None
        database.record_install_report(
            _report(1, InstallOutcome.INSTALLED, InstallReason.INSTALLED)
        )
        database.record_install_report(_report(9, InstallOutcome.REJECTED, InstallReason.EXPIRED))

        node = database.node("robot-1")
        assert node is not None
        assert node.installed_version == 1, "a rejected report does not change the install"
        assert node.last_seen_at is not None
        assert node.last_seen_at.tzinfo is not None
        reports = database.install_reports("robot-1")
        assert [(r.version, r.outcome, r.reason_code) for r in reports] == [
            (1, "installed", "installed"),
            (9, "rejected", "expired"),
        ]
        assert reports[0].release_id == release.id
        assert reports[1].release_id is None, "no release 9 was recorded"
        (stored,) = database.releases("plant-a", "stable")
        assert stored.published_at == datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
        assert stored.gate_decision_digest == "bb" * 32

        actions = [(e.actor, e.action, e.subject) for e in database.audit_events()]
        assert actions == [
            ("ops", "node.registered", "node:robot-1"),
            ("pipeline", "release.published", "release:plant-a/stable/1"),
            ("node:robot-1", "install.installed", "release:plant-a/stable/1"),
            ("node:robot-1", "install.rejected", "release:plant-a/stable/9"),
        ]

        # The same release recorded again (a re-run) returns the stored row, writes nothing;
        # another package under a recorded version is refused.
        again = database.record_release(
            "plant-a", _record(1), "file:///x", gate_decision_digest=None, actor="pipeline"
        )
        assert (again.id, again.location) == (release.id, release.location)
        other = _record(1).model_copy(update={"digest": "ee" * 32})
        with pytest.raises(FleetDatabaseError, match="already recorded with digest"):
            database.record_release(
                "plant-a", other, "file:///x", gate_decision_digest=None, actor="pipeline"
            )
        with pytest.raises(FleetDatabaseError, match="refused a change"):
            database.register_node("robot-1", "plant-a", "stable", actor="ops")
        stranger = _report(1, InstallOutcome.INSTALLED, InstallReason.INSTALLED).model_copy(
            update={"node_id": "robot-404"}
        )
        with pytest.raises(FleetDatabaseError, match="no such node is registered"):
            database.record_install_report(stranger)
        assert len(database.audit_events()) == 4, "refused changes leave no audit record"
    finally:
        database.close()


def test_unmigrated_database_is_refused(tmp_path: Path) -> None:
    database = FleetDatabase(sqlite_url(tmp_path / "empty.db"))
    try:
        with pytest.raises(FleetDatabaseError, match=r"revision none.*run the migrations"):
            database.require_current_schema()
    finally:
        database.close()


def test_bad_url_and_unreachable_server_fail_clearly() -> None:
    with pytest.raises(FleetDatabaseError, match="cannot use database URL"):
        migrate("nosuchdriver://x")
    url = "postgresql://fleet:s3cret-pw@127.0.0.1:1/fleet"
    with pytest.raises(FleetDatabaseError) as raised:
        migrate(url)
    assert "s3cret-pw" not in str(raised.value)
    assert "s3cret-pw" not in safe_url(url)
