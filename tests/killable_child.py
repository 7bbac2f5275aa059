"""Run a Python child module that prints ``ready`` and later its duration; optionally
SIGKILL it some time after it is ready (the crash-safety tests' kill harness)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_killable_child(
    module: str, args: list[str], kill_after: float | None, timeout: float = 120
) -> tuple[bool, float | None]:
    """Run ``python -m module *args``; SIGKILL it ``kill_after`` s after it prints
    ``ready``. Returns (killed before it finished, the duration the child reported)."""
    child = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    ready = child.stdout.readline()
    assert ready.strip() == "ready", child.stderr.read() if child.stderr else ""
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(child.pid, signal.SIGKILL)
    out, err = child.communicate(timeout=timeout)
    if child.returncode == -signal.SIGKILL:
        return True, None
    assert child.returncode == 0, err
    return False, float(out.split()[1])
