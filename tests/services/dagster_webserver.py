"""The Dagster UI for the tests: dagster-webserver and dagster-daemon on a free port.

Both processes run from the installed binaries with a temporary ``DAGSTER_HOME`` that
holds a copy of the project's instance config, so the UI under test is the one
``make ui`` serves. They are started through ``env --default-signal=INT,TERM`` (a
process started from a script otherwise inherits ignored SIGINT/SIGTERM and never
stops) in their own process groups, and stopped by process group at the end.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services.process import ServiceProcess, ServiceStartError, free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SIGNALS = ("env", "--default-signal=INT,TERM")
INSTANCE_CONFIG = REPO_ROOT / "dagster.yaml"
WORKSPACE = REPO_ROOT / "workspace.yaml"


@dataclass(frozen=True)
class DagsterUI:
    """A running Dagster UI: where to browse it and where its state and logs are."""

    url: str
    dagster_home: Path
    webserver_log: Path
    daemon_log: Path | None

    def log_tails(self, lines: int = 40) -> str:
        """The end of each service log, to attach to a failing assertion."""
        parts = []
        for log in (self.webserver_log, self.daemon_log):
            if log is not None and log.exists():
                tail = log.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {log.name} ---\n" + "\n".join(tail))
        return "\n".join(parts)


def prepare_dagster_home(home: Path, instance_config: Path = INSTANCE_CONFIG) -> Path:
    """Create ``home`` as a DAGSTER_HOME holding a copy of ``instance_config``.

    The community sign-up dialog that the UI shows once per instance on localhost is
    marked as seen (the file its "Skip" button writes), so it cannot cover the page.
    """
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_config, home / "dagster.yaml")
    nux_dir = home / ".nux"
    nux_dir.mkdir(exist_ok=True)
    (nux_dir / "nux.yaml").write_text("seen: 1\n", encoding="utf-8")
    return home


def http_ok(url: str) -> bool:
    """True when ``url`` answers HTTP 200."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop_process_groups(
    processes: Sequence[subprocess.Popen[bytes]], sig: int, timeout: float
) -> None:
    """Send ``sig`` to each process group led by ``processes``; SIGKILL what outlives ``timeout``.

    Dagster's services stop their own code servers on SIGINT/SIGTERM; signalling the
    group also reaches any child that its parent failed to stop.
    """
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(
        process.poll() is None or process_group_alive(process.pid) for process in processes
    ):
        time.sleep(0.2)
    for process in processes:
        if process_group_alive(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def process_group_alive(pgid: int) -> bool:
    """True while any process is left in process group ``pgid``."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dagster_binary(name: str) -> str:
    """Path of a Dagster console script installed with the running interpreter."""
    path = Path(sysconfig.get_path("scripts")) / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise ServiceStartError(
            f"{name} is not installed in {path.parent}; run `make bootstrap` "
            "(it installs dagster and dagster-webserver into .venv)"
        )
    return str(path)


def service_argv(dagster_home: Path, *command: str) -> list[str]:
    """``command`` with default signal handling, run from ``dagster_home``.

    Relative paths in the instance config (``storage: sqlite: base_dir``) then resolve
    inside the temporary home instead of the checkout.
    """
    return [*DEFAULT_SIGNALS, f"--chdir={dagster_home}", *command]


@contextmanager
def running_dagster_ui(
    dagster_home: Path,
    env: Mapping[str, str],
    *,
    workspace: Path = WORKSPACE,
    with_daemon: bool = True,
    startup_timeout: float = 120.0,
    stop_timeout: float = 30.0,
) -> Iterator[DagsterUI]:
    """Serve the Dagster UI for ``workspace`` on 127.0.0.1 until the block exits.

    ``dagster_home`` must already hold the instance config (see
    :func:`prepare_dagster_home`); ``env`` is the environment of both services, to which
    ``DAGSTER_HOME`` is added. With ``with_daemon`` a ``dagster-daemon`` runs beside the
    webserver, which queued runs, sensors and schedules need.
    """
    port = free_port()
    service_env = {**env, "DAGSTER_HOME": str(dagster_home)}
    webserver = ServiceProcess(
        name="dagster-webserver",
        argv=service_argv(
            dagster_home,
            dagster_binary("dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            str(workspace),
        ),
        log_path=dagster_home / "webserver.log",
        env=service_env,
    )
    daemon = (
        ServiceProcess(
            name="dagster-daemon",
            argv=service_argv(
                dagster_home, dagster_binary("dagster-daemon"), "run", "-w", str(workspace)
            ),
            log_path=dagster_home / "daemon.log",
            env=service_env,
        )
        if with_daemon
        else None
    )
    services = [service for service in (webserver, daemon) if service is not None]
    url = f"http://127.0.0.1:{port}"
    try:
        for service in services:
            service.start()
        webserver.wait_until(lambda: http_ok(f"{url}/server_info"), timeout=startup_timeout)
        if daemon is not None and daemon.process is not None and daemon.process.poll() is not None:
            raise ServiceStartError(f"dagster-daemon exited early:\n{daemon.log_tail()}")
        yield DagsterUI(
            url=url,
            dagster_home=dagster_home,
            webserver_log=webserver.log_path,
            daemon_log=daemon.log_path if daemon is not None else None,
        )
    finally:
        started = [service.process for service in services if service.process is not None]
        stop_process_groups(started, signal.SIGTERM, stop_timeout)
