"""Deploy hooks: install a service's certificate and key atomically, then reload it.

:class:`CertificateFiles` is where a service reads its chain and key. Each file is
replaced with one atomic rename (:mod:`tensorguard.durable`; key 0600), key first, and
the service reads them only at its reload, so it never loads a half-written file. A
:class:`Snapshot` taken before the install is what a rollback writes back.

Reloads: :class:`SignalReload` (e.g. SIGHUP to Mosquitto, which re-reads its listener's
certificate, key and CRL) and :class:`CommandReload` (``systemctl reload …``, a fleet
API's own reload command). Both raise :class:`DeployError` on failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tensorguard.durable import DurableWriteError, atomic_write_bytes
from tensorguard.identity.errors import IdentityError

RELOAD_TIMEOUT_S = 60


class DeployError(IdentityError):
    """Installing a certificate or reloading the service failed."""


class Reload(Protocol):
    """Makes the service load its certificate files again."""

    def __call__(self) -> None:
        """Reload; raise :class:`DeployError` when it cannot be done."""


@dataclass(frozen=True)
class Snapshot:
    """The certificate and key a service had before an install (None: no file)."""

    chain_pem: bytes | None
    key_pem: bytes | None


@dataclass(frozen=True)
class CertificateFiles:
    """The chain (leaf first) and private key files a service reads."""

    cert_file: Path
    key_file: Path

    def snapshot(self) -> Snapshot:
        """What is installed now."""
        return Snapshot(_read(self.cert_file), _read(self.key_file))

    def install(self, chain_pem: bytes, key_pem: bytes) -> None:
        """Replace the key, then the chain, each with one atomic rename."""
        try:
            atomic_write_bytes(self.key_file, key_pem, mode=0o600)
            atomic_write_bytes(self.cert_file, chain_pem, mode=0o644)
        except DurableWriteError as exc:
            raise DeployError(f"cannot install the certificate: {exc}") from exc

    def restore(self, snapshot: Snapshot) -> None:
        """Put ``snapshot`` back (removing files that did not exist then)."""
        for path, data, mode in (
            (self.key_file, snapshot.key_pem, 0o600),
            (self.cert_file, snapshot.chain_pem, 0o644),
        ):
            try:
                if data is None:
                    path.unlink(missing_ok=True)
                else:
                    atomic_write_bytes(path, data, mode=mode)
            except (OSError, DurableWriteError) as exc:
                raise DeployError(f"cannot restore {path}: {exc}") from exc


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise DeployError(f"cannot read the installed {path}: {exc.strerror}") from exc


@dataclass(frozen=True)
class SignalReload:
    """Send ``signal_number`` (default SIGHUP) to the process whose PID is in ``pid_file``."""

    pid_file: Path
    signal_number: int = signal.SIGHUP

    def __call__(self) -> None:
        """Signal the service."""
        try:
            pid = int(self.pid_file.read_text(encoding="ascii").strip())
            os.kill(pid, self.signal_number)
        except (OSError, ValueError) as exc:
            raise DeployError(
                f"cannot signal the service named by {self.pid_file}: {exc}; check that it "
                "runs and writes its PID there (Mosquitto: pid_file)"
            ) from exc


@dataclass(frozen=True)
class CommandReload:
    """Run ``argv`` (e.g. ``systemctl reload mosquitto``); a non-zero exit is a failure."""

    argv: Sequence[str]

    def __call__(self) -> None:
        """Run the reload command."""
        try:
            done = subprocess.run(
                list(self.argv),
                capture_output=True,
                text=True,
                timeout=RELOAD_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise DeployError(f"reload command {self.argv[0]} could not run: {exc}") from exc
        if done.returncode != 0:
            raise DeployError(
                f"reload command {self.argv[0]} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-300:]}"
            )
