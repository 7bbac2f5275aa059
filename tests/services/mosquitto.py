"""A throw-away Mosquitto broker for the tests: temp dir, free port, loopback only."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services.process import ServiceProcess, find_binary, free_port, port_is_open

MOSQUITTO_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin")


@dataclass(frozen=True)
class MosquittoBroker:
    """Connection facts for a running test broker (anonymous access, loopback only)."""

    host: str
    port: int
    log_path: Path


def _config(port: int, work_dir: Path) -> str:
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "persistence false",
        "log_dest stdout",
        "log_type error",
        "log_type warning",
        "log_type notice",
        f"pid_file {work_dir / 'mosquitto.pid'}",
    ]
    if os.geteuid() == 0:
        # Mosquitto drops to the 'mosquitto' account when started as root; the temp dir
        # belongs to root, so keep running as root (the listener is loopback only).
        lines.append("user root")
    return "\n".join(lines) + "\n"


@contextmanager
def running_mosquitto(port: int | None = None) -> Iterator[MosquittoBroker]:
    """Start Mosquitto in a fresh temp dir; stop it by PID and delete the dir on exit.

    ``port`` reuses a known port (to restart a broker where clients expect it).
    """
    binary = find_binary("mosquitto", MOSQUITTO_BIN_DIRS)
    work_dir = Path(tempfile.mkdtemp(prefix="tg-mosquitto-"))
    port = port or free_port()
    config = work_dir / "mosquitto.conf"
    config.write_text(_config(port, work_dir), encoding="utf-8")
    broker = ServiceProcess(
        name="mosquitto", argv=[binary, "-c", str(config)], log_path=work_dir / "mosquitto.log"
    )
    broker.start()
    try:
        broker.wait_until(lambda: port_is_open(port), timeout=20)
        yield MosquittoBroker(host="127.0.0.1", port=port, log_path=broker.log_path)
    finally:
        broker.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
