"""Alembic environment for the fleet database.

Configured programmatically by :mod:`tensorguard.fleet.db`: the caller passes an open
SQLAlchemy connection in ``config.attributes["connection"]`` (or a URL in
``sqlalchemy.url``). The version table is ``fleet_alembic_version`` so that this
history can share a database with other Alembic users (Dagster's storage included).
SQLite migrations run in batch mode so that later revisions can alter tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from tensorguard.fleet.models import MIGRATION_VERSION_TABLE as VERSION_TABLE
from tensorguard.fleet.models import Base


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit SQL for ``sqlalchemy.url`` without connecting (``alembic upgrade --sql``)."""
    context.configure(
        url=context.config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate over the connection the caller provided, or one opened from the URL."""
    connection = context.config.attributes.get("connection")
    if isinstance(connection, Connection):
        _configure(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("fleet migrations need a connection or sqlalchemy.url")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as opened:
        _configure(opened)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
