"""The ``tensorguard`` command: dispatch, the one exit-code table, and a light parser."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tensorguard.cli import build_parser, main
from tensorguard.cli.exit_codes import ExitCode, exit_code_for
from tensorguard.errors import ConfigurationError, ProductionGateError, TensorGuardError
from tests.cli import EXTRAS_ONLY

REPO_ROOT = Path(__file__).resolve().parents[2]

# `--help` imports neither the extras nor the base's libraries nor TensorGuard's areas.
HEAVY_MODULES = (
    *EXTRAS_ONLY,
    "paho",
    "cryptography",
    "pydantic",
    "yaml",
    "pkcs11",
    "tensorguard.tgsp",
    "tensorguard.keys",
    "tensorguard.fleet",
    "tensorguard.crypto",
    "tensorguard.service",
    "tensorguard.preflight",
)
HELP_COMMANDS = (
    (),
    ("keys",),
    ("keys", "generate"),
    ("keys", "show"),
    ("tgsp",),
    ("tgsp", "build"),
    ("tgsp", "inspect"),
    ("tgsp", "verify"),
    ("tgsp", "open"),
    ("agent",),
    ("agent", "run"),
    ("serve",),
    ("token",),
    ("preflight",),
    ("trust-store",),
    ("trust-store", "create"),
    ("trust-store", "add"),
    ("trust-store", "remove"),
)


def test_every_area_is_registered() -> None:
    help_text = build_parser().format_help()
    for area in ("keys", "tgsp", "agent", "serve", "token"):
        assert area in help_text


def test_missing_action_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as excinfo:
        main(["keys"])
    assert excinfo.value.code == ExitCode.USAGE


def test_console_script_reports_configuration_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tensorguard.cli", "keys", "show", "--name", "release"],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == ExitCode.CONFIG
    assert "TG_KEY_MASTER is not set" in result.stderr


# --- the exit-code table -----------------------------------------------------------------


def test_usage_code_is_argparse_code() -> None:
    with pytest.raises(SystemExit) as excinfo:
        build_parser().parse_args(["tgsp", "verify"])
    assert excinfo.value.code == ExitCode.USAGE == 2


def _documented_codes(text: str) -> dict[int, str]:
    return {
        int(code): name for code, name in re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", text, re.M)
    }


def test_docs_table_lists_every_code() -> None:
    documented = _documented_codes((REPO_ROOT / "docs" / "CLI.md").read_text(encoding="utf-8"))
    assert documented == {member.value: member.name for member in ExitCode}


def test_module_table_lists_every_code() -> None:
    import tensorguard.cli.exit_codes as module

    rows = re.findall(r"^(\d+)\s+([A-Z_]+)\s", module.__doc__ or "", re.M)
    assert {int(code): name for code, name in rows} == {m.value: m.name for m in ExitCode}


def _errors() -> Iterator[tuple[TensorGuardError, ExitCode]]:
    import tensorguard.tgsp as tgsp
    from tensorguard.digest import DigestError
    from tensorguard.fleet.errors import AgentConfigError, MqttError
    from tensorguard.keys._errors import (
        InvalidKeyNameError,
        KeyExistsError,
        KeyNotFoundError,
        KeyProviderProductionError,
        KeyProviderUnavailable,
        TokenError,
        WrongMasterKeyError,
    )

    yield ConfigurationError("x"), ExitCode.CONFIG
    yield ProductionGateError("x"), ExitCode.CONFIG
    yield KeyProviderProductionError("x"), ExitCode.CONFIG
    yield AgentConfigError("x"), ExitCode.CONFIG
    yield tgsp.KeyFileError("x"), ExitCode.INPUT
    yield tgsp.TrustStoreError("x"), ExitCode.INPUT  # not UNTRUSTED, its parent's code
    yield tgsp.PackageUnreadableError("x"), ExitCode.INPUT
    yield tgsp.SourceChangedError("x"), ExitCode.INPUT
    yield DigestError("x"), ExitCode.INPUT
    yield tgsp.PackageTruncatedError("x"), ExitCode.MALFORMED
    yield tgsp.UnknownSignerError("x"), ExitCode.UNTRUSTED
    yield tgsp.PackageSignatureError("x"), ExitCode.UNTRUSTED
    yield tgsp.ChunkAuthenticationError("x"), ExitCode.INTEGRITY
    yield WrongMasterKeyError("x"), ExitCode.INTEGRITY
    yield tgsp.RollbackError("x"), ExitCode.POLICY
    yield tgsp.KeyUnwrapError("x"), ExitCode.RECIPIENT
    yield tgsp.SymlinkRejectedError("x"), ExitCode.UNSAFE_PATH
    yield tgsp.ExtractionError("x"), ExitCode.EXTRACTION
    yield KeyNotFoundError("x"), ExitCode.KEY_NOT_FOUND
    yield KeyExistsError("x"), ExitCode.KEY_EXISTS
    yield KeyProviderUnavailable("x"), ExitCode.PROVIDER_UNAVAILABLE
    yield TokenError("x"), ExitCode.TOKEN
    yield MqttError("x"), ExitCode.ERROR
    yield InvalidKeyNameError("x"), ExitCode.ERROR
    yield TensorGuardError("x"), ExitCode.ERROR


def test_each_error_maps_to_its_code() -> None:
    for error, code in _errors():
        assert exit_code_for(error) is code, type(error).__name__


# --- agent run --once --------------------------------------------------------------------


def _agent_once(monkeypatch: pytest.MonkeyPatch, outcomes: list[str]) -> int:
    import tensorguard.fleet.agent as agent_module
    import tensorguard.fleet.agent_config as config_module
    from tensorguard.fleet.messages import InstallOutcome

    def reports(_agent: object, *, timeout_s: float) -> list[Any]:
        assert timeout_s == 2.5
        return [
            SimpleNamespace(outcome=InstallOutcome(outcome), model_dump_json=lambda: "{}")
            for outcome in outcomes
        ]

    monkeypatch.setattr(config_module, "load_agent_config", lambda path: path)
    monkeypatch.setattr(agent_module.EdgeAgent, "from_config", classmethod(lambda _cls, c: c))
    monkeypatch.setattr(agent_module, "run_once", reports)
    return main(["agent", "run", "--config", "agent.yaml", "--once", "--timeout", "2.5"])


def test_agent_once_exit_codes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _agent_once(monkeypatch, []) == ExitCode.OK
    assert _agent_once(monkeypatch, ["installed", "installed"]) == ExitCode.OK
    assert _agent_once(monkeypatch, ["installed", "rejected"]) == ExitCode.NOT_INSTALLED
    assert _agent_once(monkeypatch, ["failed"]) == ExitCode.NOT_INSTALLED


def test_agent_missing_config_is_a_configuration_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.yaml"
    assert main(["agent", "run", "--config", str(missing), "--once"]) == ExitCode.CONFIG
    assert "tensorguard agent: error: cannot read agent configuration" in capsys.readouterr().err


# --- a light parser ----------------------------------------------------------------------


def test_chunk_size_help_shows_the_format_default() -> None:
    from tensorguard.cli.tgsp import CHUNK_SIZE_HELP
    from tensorguard.tgsp._format import DEFAULT_CHUNK_SIZE

    assert f"(default: {DEFAULT_CHUNK_SIZE})" in CHUNK_SIZE_HELP


def _imported_modules(importtime_stderr: str) -> set[str]:
    # Lines look like "import time:   self [us] | cumulative | <indent>module.name".
    return {
        line.rsplit("|", 1)[1].strip()
        for line in importtime_stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }


def _heavy(modules: set[str]) -> set[str]:
    return {
        module
        for module in modules
        for heavy in HEAVY_MODULES
        if module == heavy or module.startswith(heavy + ".")
    }


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_imports_nothing_heavy(command: tuple[str, ...]) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tensorguard", *command, "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage: tensorguard" in result.stdout
    modules = _imported_modules(result.stderr)
    assert "tensorguard.cli" in modules, "importtime output was not parsed"
    assert _heavy(modules) == set()


def test_building_the_parser_imports_nothing_heavy() -> None:
    """The same check in-process, for a caller that builds the parser itself."""
    script = (
        "import sys\n"
        "from tensorguard.cli import build_parser\n"
        "build_parser().parse_args(['tgsp', 'verify', 'p', '--trust-store', 't'])\n"
        "print('\\n'.join(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert _heavy(set(result.stdout.split())) == set()


def test_handlers_are_plain_callables() -> None:
    args = build_parser().parse_args(["tgsp", "inspect", "x.tgsp"])
    assert callable(args.handler)
    assert isinstance(args, argparse.Namespace)
