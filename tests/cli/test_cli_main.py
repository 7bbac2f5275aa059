"""The top-level ``tensorguard`` command dispatches to each area's handlers."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tensorguard.cli import build_parser, main


def test_every_area_is_registered() -> None:
    help_text = build_parser().format_help()
    for area in ("keys", "tgsp", "agent"):
        assert area in help_text


def test_missing_action_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["keys"])
    assert excinfo.value.code == 2


def test_console_script_reports_configuration_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tensorguard.cli", "keys", "show", "--name", "release"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert result.returncode == 3
    assert "TG_KEY_MASTER is not set" in result.stderr
