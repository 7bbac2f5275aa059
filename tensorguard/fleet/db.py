"""The fleet application database: engine, Alembic migrations and the records kept in it.

SQLite is the default (one file, no server); PostgreSQL works through the same code
(``postgresql://...`` with psycopg2). The schema is owned by the Alembic history in
``tensorguard/fleet/migrations`` and applied with :func:`migrate`; :class:`FleetDatabase`
refuses to work on a database that is not at the head revision.

Every change :class:`FleetDatabase` makes writes an :class:`~tensorguard.fleet.models.AuditEvent`
in the same transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from tensorguard.codec import canonical_digest
from tensorguard.fleet.errors import FleetDatabaseError
from tensorguard.fleet.messages import InstallOutcome, InstallReport, ReleaseAnnouncement
from tensorguard.fleet.models import (
    MIGRATION_VERSION_TABLE,
    AnnouncementOutboxRow,
    AuditEvent,
    EdgeNode,
    InstallReportRow,
    ReleaseRow,
    of_release,
    record_audit,
    utc_now,
)
from tensorguard.fleet.names import validate_name
from tensorguard.fleet.registry import ReleaseRecord

MIGRATIONS_DIR = Path(__file__).resolve().with_name("migrations")
DEFAULT_DATABASE_FILE = "fleet.db"


def sqlite_url(path: Path) -> str:
    """SQLAlchemy URL of a SQLite database file."""
    return f"sqlite:///{path.resolve()}"


def safe_url(database_url: str) -> str:
    """The URL with any password masked, for messages and logs."""
    try:
        return make_url(database_url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


OUTBOX_PENDING = "pending"
OUTBOX_DELIVERED = "delivered"
OUTBOX_SUPERSEDED = "superseded"


def install_report_digest(report: InstallReport) -> str:
    """SHA-256 of the report's canonical JSON: equal for a re-delivered retained report."""
    return canonical_digest(report.model_dump(mode="json"))


def _outbox_row(
    fleet: str, record: ReleaseRecord, announcement: ReleaseAnnouncement
) -> AnnouncementOutboxRow:
    """The pending outbox row of ``announcement``, which must announce ``record``."""
    if (announcement.fleet, announcement.channel, announcement.version) != (
        fleet,
        record.channel,
        record.version,
    ):
        raise FleetDatabaseError(
            "the announcement to queue names another release than the one recorded"
        )
    return AnnouncementOutboxRow(
        fleet=fleet,
        channel=record.channel,
        version=record.version,
        payload=announcement.to_payload().decode("utf-8"),
        state=OUTBOX_PENDING,
        queued_at=utc_now(),
        attempts=0,
    )


def _enable_sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def create_database_engine(database_url: str) -> Engine:
    """An engine for ``database_url``; SQLite connections enforce foreign keys."""
    try:
        engine = create_engine(database_url, pool_pre_ping=True)
    except (ArgumentError, ImportError) as exc:
        raise FleetDatabaseError(
            f"cannot use database URL {safe_url(database_url)}: {exc}; use sqlite:///PATH "
            "or postgresql://USER@HOST:PORT/DB"
        ) from exc
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _enable_sqlite_foreign_keys)
    return engine


def _alembic_config(connection: Any = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision of the shipped migration history."""
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:
        raise FleetDatabaseError(f"no migrations found in {MIGRATIONS_DIR}; the install is broken")
    return head


def _run_migration(database_url: str, action: str, revision: str) -> None:
    engine = create_database_engine(database_url)
    try:
        with engine.begin() as connection:
            config = _alembic_config(connection)
            if action == "upgrade":
                command.upgrade(config, revision)
            else:
                command.downgrade(config, revision)
    except SQLAlchemyError as exc:
        raise FleetDatabaseError(
            f"{action} of the fleet database {safe_url(database_url)} to {revision} failed: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0]}; check that the database is "
            "reachable and the account may create tables"
        ) from exc
    finally:
        engine.dispose()


def migrate(database_url: str, revision: str = "head") -> None:
    """Upgrade the fleet schema at ``database_url`` to ``revision`` (default: newest)."""
    _run_migration(database_url, "upgrade", revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    """Downgrade the fleet schema to ``revision`` (``base`` drops every fleet table)."""
    _run_migration(database_url, "downgrade", revision)


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None if the fleet schema was never applied."""
    engine = create_database_engine(database_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"version_table": MIGRATION_VERSION_TABLE}
            )
            return context.get_current_revision()
    except SQLAlchemyError as exc:
        raise FleetDatabaseError(
            f"cannot read the schema revision of {safe_url(database_url)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
        ) from exc
    finally:
        engine.dispose()


class FleetDatabase:
    """Edge nodes, releases, install reports and the audit log in one database."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.engine = create_database_engine(database_url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"FleetDatabase({safe_url(self.url)!r})"

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def require_current_schema(self) -> None:
        """Raise unless the database is at the head revision of the shipped migrations."""
        current, head = current_revision(self.url), head_revision()
        if current != head:
            raise FleetDatabaseError(
                f"fleet database {safe_url(self.url)} is at schema revision {current or 'none'}"
                f" but this TensorGuard expects {head}; run the migrations "
                "(tensorguard.fleet.db.migrate) first"
            )

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed if the block succeeds, rolled back otherwise."""
        session = self._sessions()
        try:
            yield session
            session.commit()
        except IntegrityError as exc:
            session.rollback()
            raise FleetDatabaseError(
                f"the fleet database refused a change: {str(exc.orig).splitlines()[0]}"
            ) from exc
        except SQLAlchemyError as exc:
            session.rollback()
            raise FleetDatabaseError(
                f"fleet database operation failed on {safe_url(self.url)}: "
                f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            ) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def register_node(
        self,
        node_id: str,
        fleet: str,
        channel: str,
        *,
        recipient_fingerprint: str | None = None,
        actor: str,
    ) -> EdgeNode:
        """Add an edge node (its node id must be new)."""
        for kind, value in (("node", node_id), ("fleet", fleet), ("channel", channel)):
            validate_name(kind, value)
        node = EdgeNode(
            node_id=node_id,
            fleet=fleet,
            channel=channel,
            recipient_fingerprint=recipient_fingerprint,
            registered_at=utc_now(),
        )
        with self.session() as session:
            session.add(node)
            record_audit(
                session,
                actor,
                "node.registered",
                f"node:{node_id}",
                {"fleet": fleet, "channel": channel, "recipient": recipient_fingerprint},
            )
        return node

    def record_release(
        self,
        fleet: str,
        record: ReleaseRecord,
        location: str,
        *,
        gate_decision_digest: str | None,
        actor: str,
        announcement: ReleaseAnnouncement | None = None,
    ) -> ReleaseRow:
        """Store a published registry release (each fleet/channel/version once; recording
        the same release again, e.g. from a re-run, returns the stored row).

        With ``announcement``, queue it in ``announcement_outbox`` in the same transaction,
        so a recorded release is never left without its announcement
        (:mod:`tensorguard.fleet.outbox` delivers it).
        """
        validate_name("fleet", fleet)
        existing = self._recorded_release(fleet, record)
        if existing is not None:
            if announcement is not None:
                self._queue_if_missing(fleet, record, announcement)
            return existing
        release = ReleaseRow(
            fleet=fleet,
            channel=record.channel,
            version=record.version,
            digest=record.digest,
            size=record.size,
            location=location,
            gate_decision_digest=gate_decision_digest,
            published_at=record.published_at,
        )
        with self.session() as session:
            session.add(release)
            record_audit(
                session,
                actor,
                "release.published",
                f"release:{fleet}/{record.channel}/{record.version}",
                {"digest": record.digest, "size": record.size, "gate": gate_decision_digest},
            )
            if announcement is not None:
                session.add(_outbox_row(fleet, record, announcement))
        return release

    def _recorded_release(self, fleet: str, record: ReleaseRecord) -> ReleaseRow | None:
        """The row of this release if an earlier attempt recorded it (same digest); a
        different package under the same version is refused."""
        with self.session() as session:
            row = session.scalars(
                select(ReleaseRow).where(
                    of_release(ReleaseRow, fleet, record.channel, record.version)
                )
            ).first()
        if row is not None and row.digest != record.digest:
            raise FleetDatabaseError(
                f"release {fleet}/{record.channel}/{record.version} is already recorded with "
                f"digest {row.digest[:16]}…, not {record.digest[:16]}…; a version is one package"
            )
        return row

    def _queue_if_missing(
        self, fleet: str, record: ReleaseRecord, announcement: ReleaseAnnouncement
    ) -> None:
        with self.session() as session:
            queued = session.scalars(
                select(AnnouncementOutboxRow).where(
                    of_release(AnnouncementOutboxRow, fleet, record.channel, record.version)
                )
            ).first()
            if queued is None:
                session.add(_outbox_row(fleet, record, announcement))

    def record_install_report(self, report: InstallReport) -> InstallReportRow:
        """Store a node's install report; the node must be registered in that fleet.

        The same report (equal canonical JSON, e.g. a retained report delivered again) is
        stored once: the stored row is returned and nothing is written.
        """
        return self.store_install_report(report)[0]

    def store_install_report(self, report: InstallReport) -> tuple[InstallReportRow, bool]:
        """Like :meth:`record_install_report`; also says whether the report was new."""
        digest = install_report_digest(report)
        with self.session() as session:
            node = session.scalars(
                select(EdgeNode).where(EdgeNode.node_id == report.node_id)
            ).first()
            if node is None or node.fleet != report.fleet:
                raise FleetDatabaseError(
                    f"install report from node {report.node_id!r} of fleet {report.fleet!r} "
                    "refused: no such node is registered in that fleet; register it first"
                )
            stored = session.scalars(
                select(InstallReportRow).where(
                    InstallReportRow.node_pk == node.id, InstallReportRow.report_digest == digest
                )
            ).first()
            if stored is not None:
                return stored, False
            release = session.scalars(
                select(ReleaseRow).where(
                    of_release(ReleaseRow, report.fleet, report.channel, report.version)
                )
            ).first()
            row = InstallReportRow(
                node=node,
                release=release,
                channel=report.channel,
                version=report.version,
                outcome=report.outcome.value,
                reason_code=report.reason_code.value,
                reason=report.reason,
                reported_at=report.timestamp,
                received_at=utc_now(),
                report_digest=digest,
            )
            session.add(row)
            node.last_seen_at = row.received_at
            if report.outcome is InstallOutcome.INSTALLED:
                node.installed_version = report.version
            record_audit(
                session,
                f"node:{report.node_id}",
                f"install.{report.outcome.value}",
                f"release:{report.fleet}/{report.channel}/{report.version}",
                {"reason_code": report.reason_code.value, "digest": report.digest},
            )
        return row, True

    def node(self, node_id: str) -> EdgeNode | None:
        """The registered node with this id, if any."""
        with self.session() as session:
            return session.scalars(select(EdgeNode).where(EdgeNode.node_id == node_id)).first()

    def releases(self, fleet: str, channel: str) -> list[ReleaseRow]:
        """Releases of a fleet channel, oldest version first."""
        with self.session() as session:
            query = (
                select(ReleaseRow)
                .where(ReleaseRow.fleet == fleet, ReleaseRow.channel == channel)
                .order_by(ReleaseRow.version)
            )
            return list(session.scalars(query))

    def install_reports(self, node_id: str) -> list[InstallReportRow]:
        """A node's install reports, oldest first."""
        with self.session() as session:
            query = (
                select(InstallReportRow)
                .join(EdgeNode)
                .where(EdgeNode.node_id == node_id)
                .order_by(InstallReportRow.received_at, InstallReportRow.id)
            )
            return list(session.scalars(query))

    def audit_events(self) -> list[AuditEvent]:
        """The whole audit log, oldest first."""
        with self.session() as session:
            return list(session.scalars(select(AuditEvent).order_by(AuditEvent.id)))
