"""Shared plumbing for service fixtures: free ports, readiness waits, PID-based stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


class ServiceStartError(RuntimeError):
    """A test service could not be started; the message carries its log tail."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def find_binary(name: str, extra_dirs: Sequence[str] = ()) -> str:
    """Locate a service binary on PATH or in ``extra_dirs`` (globs allowed)."""
    found = shutil.which(name)
    if found:
        return found
    for pattern in extra_dirs:
        for directory in sorted(Path("/").glob(pattern.lstrip("/")), reverse=True):
            candidate = directory / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return str(candidate)
    raise ServiceStartError(
        f"{name} is not installed; run `make test` (it installs the Debian packages the "
        "tests need) or install the package by hand"
    )


@dataclass
class ServiceProcess:
    """A child process started for the tests and stopped by its PID."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    user: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        """Start the process in its own session, logging to ``log_path``."""
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            user=self.user,
            start_new_session=True,
        )
        log.close()

    def wait_until(self, ready: object, timeout: float = 30.0) -> None:
        """Poll ``ready()`` until true; fail with the log tail if the process dies."""
        assert callable(ready)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServiceStartError(f"{self.name} exited early:\n{self.log_tail()}")
            if ready():
                return
            time.sleep(0.1)
        raise ServiceStartError(f"{self.name} not ready after {timeout}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the service log, for error messages."""
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        """Signal the process by PID, then kill it if it does not exit in time."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=timeout)


def service_user(user: str) -> str | None:
    """The account to drop to when the tests run as root (PostgreSQL refuses root)."""
    return user if os.geteuid() == 0 else None
