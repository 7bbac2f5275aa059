"""A throw-away Redis server for the tests (the Celery broker): temp dir, free port,
loopback only, nothing persisted."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services.process import ServiceProcess, find_binary, free_port, port_is_open


@dataclass(frozen=True)
class RedisServer:
    """Connection facts for a running test Redis (loopback only, no password)."""

    host: str
    port: int
    log_path: Path

    def url(self, database: int = 0) -> str:
        """The ``redis://`` URL of logical database ``database``."""
        return f"redis://{self.host}:{self.port}/{database}"


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """Start Debian's ``redis-server`` in a fresh temp dir; stop it by PID on exit."""
    binary = find_binary("redis-server", ("/usr/bin", "/usr/sbin"))
    work_dir = Path(tempfile.mkdtemp(prefix="tg-redis-"))
    port = free_port()
    server = ServiceProcess(
        name="redis",
        argv=[
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--dir",
            str(work_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ],
        log_path=work_dir / "redis.log",
    )
    server.start()
    try:
        server.wait_until(lambda: port_is_open(port), timeout=20)
        yield RedisServer(host="127.0.0.1", port=port, log_path=server.log_path)
    finally:
        server.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
