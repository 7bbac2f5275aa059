"""What the ``tensorguard`` handlers import needs only the base install.

The slow clean-virtualenv test (``test_base_install.py``) proves it end to end; this fast
check runs in every suite: importing the modules the keys, tgsp and agent handlers load
must not import a library that only an extra (train, he, registry, pipeline) installs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cli import EXTRAS_ONLY

REPO_ROOT = Path(__file__).resolve().parents[2]

# Every module a handler in tensorguard/cli/ imports when it runs.
HANDLER_MODULES = (
    "tensorguard.cli.exit_codes",
    "tensorguard.crypto",
    "tensorguard.crypto._composite",
    "tensorguard.crypto._xwing",
    "tensorguard.digest",
    "tensorguard.keys",
    "tensorguard.keys._errors",
    "tensorguard.tgsp",
    "tensorguard.tgsp._errors",
    "tensorguard.tgsp._format",
    "tensorguard.tgsp._keyfiles",
    "tensorguard.tgsp._source",
    "tensorguard.fleet.agent",
    "tensorguard.fleet.agent_config",
    "tensorguard.fleet.errors",
    "tensorguard.fleet.messages",
    "tensorguard.identity.authority",
    "tensorguard.identity.enrol",
    # Not a handler: what an edge node uses to talk to the fleet service.
    "tensorguard.service.client",
)


def test_handler_modules_import_no_extra() -> None:
    script = (
        "import importlib, sys\n"
        f"for name in {HANDLER_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "from tensorguard.cli.exit_codes import _error_table\n"
        "_error_table()\n"
        "print('\\n'.join(sorted({name.split('.')[0] for name in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert set(result.stdout.split()) & set(EXTRAS_ONLY) == set()
