"""`make ui`'s command serves the UI and stops cleanly on Ctrl-C (SIGINT)."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.services.dagster_webserver import (
    REPO_ROOT,
    DagsterUI,
    http_ok,
    prepare_dagster_home,
    stop_process_groups,
)
from tests.services.process import free_port

pytestmark = pytest.mark.slow

SHUTDOWN_TIMEOUT = 30.0
STARTUP_TIMEOUT = 120.0
# A code server that missed dagster dev's shutdown request exits on its own when the
# heartbeats stop: `dagster code-server start` waits 45 s for them (its --heartbeat-timeout,
# in the process list). Children must be gone by then, with a margin for a loaded machine.
CODE_SERVER_HEARTBEAT_TIMEOUT = 45.0
CHILDREN_GONE_TIMEOUT = CODE_SERVER_HEARTBEAT_TIMEOUT + 15.0


def make_ui_command() -> list[str]:
    """The `dagster dev` line of `make ui`, as `make --dry-run` prints it."""
    result = subprocess.run(
        ["make", "--dry-run", "--no-print-directory", "ui"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line for line in result.stdout.splitlines() if "dagster dev" in line]
    assert len(lines) == 1, f"`make ui` should run `dagster dev` once:\n{result.stdout}"
    return shlex.split(lines[0])


def with_port(argv: list[str], port: int) -> list[str]:
    """``argv`` with the value of ``-p`` replaced by ``port``."""
    assert "-p" in argv, f"`make ui` does not set the port with -p: {argv}"
    index = argv.index("-p") + 1
    return [*argv[:index], str(port), *argv[index + 1 :]]


def with_absolute_repo_paths(argv: list[str]) -> list[str]:
    """Arguments naming files of the checkout (`.venv/bin/dagster`, `workspace.yaml`)
    made absolute, so the command can run from a temporary directory."""
    return [
        str(REPO_ROOT / arg) if not arg.startswith("-") and (REPO_ROOT / arg).is_file() else arg
        for arg in argv
    ]


@pytest.fixture
def dagster_dev(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], DagsterUI]]:
    """`make ui`'s command on a free port with a temporary DAGSTER_HOME.

    It runs from the temporary home (not the checkout) so that paths in the instance
    config that are relative to the working directory stay inside the test's temp dir.
    """
    argv = make_ui_command()
    assert argv[:2] == ["env", "--default-signal=INT,TERM"], (
        f"`make ui` must restore default SIGINT/SIGTERM handling, or Ctrl-C is ignored: {argv}"
    )
    host = argv[argv.index("-h") + 1] if "-h" in argv else None
    assert host == "127.0.0.1", f"`make ui` must bind to 127.0.0.1 with -h: {argv}"
    port = free_port()
    home = prepare_dagster_home(tmp_path / "dagster_home")
    log_path = tmp_path / "dagster-dev.log"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TG_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
    }
    ui = DagsterUI(
        url=f"http://127.0.0.1:{port}", dagster_home=home, webserver_log=log_path, daemon_log=None
    )
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            with_absolute_repo_paths(with_port(argv, port)),
            cwd=home,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield process, ui
    finally:
        stop_process_groups([process], signal.SIGTERM, timeout=10)


def wait_for_ui(process: subprocess.Popen[bytes], ui: DagsterUI) -> None:
    """Wait until the webserver answers, failing early if `dagster dev` exits."""
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, f"dagster dev exited early:\n{ui.log_tails()}"
        if http_ok(f"{ui.url}/server_info"):
            return
        time.sleep(0.5)
    pytest.fail(f"the UI did not answer within {STARTUP_TIMEOUT}s:\n{ui.log_tails()}")


def survivors(processes: list[psutil.Process]) -> list[str]:
    """Descriptions of the processes that are still running (zombies count as gone)."""
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.cmdline())}")
        except psutil.NoSuchProcess:
            continue
    return alive


def test_make_ui_serves_and_stops_on_sigint(
    dagster_dev: tuple[subprocess.Popen[bytes], DagsterUI],
) -> None:
    process, ui = dagster_dev
    wait_for_ui(process, ui)
    assert http_ok(ui.url), f"the UI's start page did not load:\n{ui.log_tails()}"
    children = psutil.Process(process.pid).children(recursive=True)
    assert children, "dagster dev started no webserver/daemon/code-server processes"

    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    try:
        returncode = process.wait(timeout=SHUTDOWN_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"dagster dev ignored SIGINT for {SHUTDOWN_TIMEOUT}s:\n{ui.log_tails()}")
    remaining_time = CHILDREN_GONE_TIMEOUT - (time.monotonic() - started)
    psutil.wait_procs(children, timeout=max(remaining_time, 0.1))
    left = survivors(children)
    listing = "\n".join(left)
    assert not left, f"processes still ran {CHILDREN_GONE_TIMEOUT}s after Ctrl-C:\n{listing}"
    assert returncode == 0, f"dagster dev exited with {returncode}:\n{ui.log_tails()}"
    assert not http_ok(f"{ui.url}/server_info"), "the UI still answers after shutdown"
