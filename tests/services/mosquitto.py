"""A throw-away Mosquitto broker for the tests: temp dir, free port, loopback only.

Without ``access`` it accepts anonymous clients; with a :class:`BrokerAccess` it refuses
them and checks a password file (made with Debian's ``mosquitto_passwd``) and an ACL file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services.process import ServiceProcess, find_binary, free_port, port_is_open

MOSQUITTO_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin")


@dataclass(frozen=True)
class BrokerAccess:
    """Who may connect (username -> password) and what each may do (an ACL file)."""

    users: Mapping[str, str]
    acl_file: Path


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener that requires a client certificate signed by ``ca_file``; the
    certificate's common name is the username (``use_identity_as_username``).
    ``crl_file`` (PEM) makes the broker refuse revoked client certificates."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    crl_file: Path | None = None


@dataclass(frozen=True)
class MosquittoBroker:
    """Connection facts for a running test broker (loopback only); ``access`` is None
    when it accepts anonymous clients."""

    host: str
    port: int
    log_path: Path
    access: BrokerAccess | None = None


def _password_file(work_dir: Path, users: Mapping[str, str]) -> Path:
    """A Mosquitto password file: plain ``user:password`` lines hashed in place with
    ``mosquitto_passwd -U`` (so no password is ever on a command line)."""
    path = work_dir / "passwords"
    path.write_text("".join(f"{user}:{password}\n" for user, password in users.items()))
    path.chmod(0o600)
    tool = find_binary("mosquitto_passwd", MOSQUITTO_BIN_DIRS)
    subprocess.run([tool, "-U", str(path)], check=True, capture_output=True, timeout=30)
    return path


def _config(port: int, work_dir: Path, access: BrokerAccess | None, tls: BrokerTls | None) -> str:
    lines = [f"listener {port} 127.0.0.1"]
    if tls is not None:
        lines += [
            f"cafile {tls.ca_file}",
            f"certfile {tls.cert_file}",
            f"keyfile {tls.key_file}",
            "require_certificate true",
            "use_identity_as_username true",
        ]
        if tls.crl_file is not None:
            lines.append(f"crlfile {tls.crl_file}")
    if access is None:
        lines.append("allow_anonymous true")
    else:
        lines += ["allow_anonymous false", f"acl_file {access.acl_file}"]
        if access.users:  # none: client certificates are the only identities
            lines.append(f"password_file {_password_file(work_dir, access.users)}")
    lines += [
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
def running_mosquitto(
    port: int | None = None, access: BrokerAccess | None = None, tls: BrokerTls | None = None
) -> Iterator[MosquittoBroker]:
    """Start Mosquitto in a fresh temp dir; stop it by PID and delete the dir on exit.

    ``port`` reuses a known port (to restart a broker where clients expect it);
    ``access`` turns anonymous access off and enforces its users and ACL; ``tls`` makes
    the listener TLS-only with client certificates.
    """
    binary = find_binary("mosquitto", MOSQUITTO_BIN_DIRS)
    work_dir = Path(tempfile.mkdtemp(prefix="tg-mosquitto-"))
    port = port or free_port()
    config = work_dir / "mosquitto.conf"
    config.write_text(_config(port, work_dir, access, tls), encoding="utf-8")
    broker = ServiceProcess(
        name="mosquitto", argv=[binary, "-c", str(config)], log_path=work_dir / "mosquitto.log"
    )
    broker.start()
    try:
        broker.wait_until(lambda: port_is_open(port), timeout=20)
        yield MosquittoBroker(host="127.0.0.1", port=port, log_path=broker.log_path, access=access)
    finally:
        broker.stop()
        shutil.rmtree(work_dir, ignore_errors=True)
