"""A throw-away PostgreSQL server for the tests: initdb in a temp dir, free port."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services.process import (
    ServiceProcess,
    ServiceStartError,
    find_binary,
    free_port,
    service_user,
)

POSTGRES_BIN_DIRS = ("/usr/lib/postgresql/*/bin",)
SERVICE_USER = "postgres"


@dataclass(frozen=True)
class PostgresServer:
    """Connection facts for a running test server (trust auth on loopback only)."""

    host: str
    port: int
    user: str
    database: str

    @property
    def url(self) -> str:
        """SQLAlchemy/psycopg2 URL for the test database."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{self.database}"


def _run(argv: list[str], what: str, user: str | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, user=user)
    if result.returncode != 0:
        raise ServiceStartError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")


@contextmanager
def running_postgres(database: str = "tensorguard") -> Iterator[PostgresServer]:
    """Start PostgreSQL in a fresh temp dir; stop it by PID and delete the dir on exit.

    The directory is made directly under the system temp dir (not under pytest's
    private tmp tree) so that the unprivileged service user can reach it.
    """
    work_dir = Path(tempfile.mkdtemp(prefix="tg-postgres-"))
    try:
        with _postgres_in(work_dir, database) as server:
            yield server
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@contextmanager
def _postgres_in(work_dir: Path, database: str) -> Iterator[PostgresServer]:
    with _restartable_in(work_dir, database) as restartable:
        yield restartable.server


@dataclass
class RestartablePostgres:
    """A dedicated test server that a fault-injection test may stop and start again on
    the same port and data directory (never the shared session server)."""

    server: PostgresServer
    process: ServiceProcess
    pg_isready: str

    def is_ready(self) -> bool:
        """True when the server accepts connections."""
        probe = [self.pg_isready, "-h", self.server.host, "-p", str(self.server.port)]
        return subprocess.run(probe, capture_output=True, check=False).returncode == 0

    def stop(self, sig: int = signal.SIGQUIT) -> None:
        """Stop the server (default SIGQUIT: immediate shutdown, crash recovery on start)."""
        self.process.stop(sig=sig)

    def start(self) -> None:
        """Start the server again on its port and data directory; wait until ready."""
        self.process = ServiceProcess(
            name=self.process.name,
            argv=self.process.argv,
            log_path=self.process.log_path,
            user=self.process.user,
        )
        self.process.start()
        self.process.wait_until(self.is_ready)


@contextmanager
def running_restartable_postgres(database: str = "tensorguard") -> Iterator[RestartablePostgres]:
    """Like :func:`running_postgres`, but the test controls stop and start."""
    work_dir = Path(tempfile.mkdtemp(prefix="tg-postgres-"))
    try:
        with _restartable_in(work_dir, database) as restartable:
            yield restartable
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


@contextmanager
def _restartable_in(work_dir: Path, database: str) -> Iterator[RestartablePostgres]:
    initdb = find_binary("initdb", POSTGRES_BIN_DIRS)
    postgres = find_binary("postgres", POSTGRES_BIN_DIRS)
    data_dir = work_dir / "data"
    socket_dir = work_dir / "sock"
    socket_dir.mkdir()
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: hand the directory to the service user.
        shutil.chown(work_dir, SERVICE_USER)
        shutil.chown(socket_dir, SERVICE_USER)
        work_dir.chmod(0o700)
    user = "tensorguard"
    _run(
        [initdb, "-D", str(data_dir), "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync"],
        "initdb",
        user=service_user(SERVICE_USER),
    )
    port = free_port()
    server = ServiceProcess(
        name="postgres",
        argv=[
            postgres,
            "-D",
            str(data_dir),
            "-p",
            str(port),
            "-k",
            str(socket_dir),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        log_path=work_dir / "postgres.log",
        user=service_user(SERVICE_USER),
    )
    server.start()
    facts = PostgresServer(host="127.0.0.1", port=port, user=user, database=database)
    restartable = RestartablePostgres(facts, server, find_binary("pg_isready", POSTGRES_BIN_DIRS))
    try:
        server.wait_until(restartable.is_ready)
        createdb = find_binary("createdb", POSTGRES_BIN_DIRS)
        _run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", user, database], "createdb")
        yield restartable
    finally:
        # SIGINT is PostgreSQL's "fast shutdown": roll back clients and exit cleanly.
        restartable.process.stop(sig=signal.SIGINT)


def create_database(server: PostgresServer, name: str) -> str:
    """Create database ``name`` on ``server`` (kept until the server goes); return its URL."""
    from sqlalchemy import create_engine, text

    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()
    return f"postgresql://{server.user}@{server.host}:{server.port}/{name}"


@contextmanager
def fresh_database(server: PostgresServer, prefix: str = "fleet") -> Iterator[str]:
    """A new, empty database on ``server`` (its URL), dropped on exit."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{os.urandom(6).hex()}"
    admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server.url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()
