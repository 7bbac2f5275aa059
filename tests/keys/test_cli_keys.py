"""`tensorguard keys generate|show`: output, public-key export and distinct exit codes."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode
from tensorguard.cli.keys import add_keys_commands
from tensorguard.crypto._composite import COMPOSITE_ALGORITHM
from tensorguard.tgsp._keyfiles import load_recipient_public_key, load_verify_key


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="tensorguard")
    add_keys_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


@pytest.fixture
def file_env(monkeypatch: pytest.MonkeyPatch, key_dir: Path, master_text: str) -> str:
    monkeypatch.setenv("TG_KEY_PROVIDER", "file")
    monkeypatch.setenv("TG_KEY_DIR", str(key_dir))
    monkeypatch.setenv("TG_KEY_MASTER", master_text)
    return master_text


@pytest.mark.usefixtures("file_env")
def test_generate_then_show_signing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    public_file = tmp_path / "release.pub"
    assert _run(["keys", "generate", "--name", "release", "--json"]) == ExitCode.OK
    generated = json.loads(capsys.readouterr().out)
    assert generated["algorithm"] == COMPOSITE_ALGORITHM
    assert generated["provider"] == "file"

    assert _run(["keys", "show", "--name", "release", "--public-out", str(public_file)]) == 0
    shown = capsys.readouterr().out
    assert f"fingerprint: {generated['fingerprint']}" in shown
    public = load_verify_key(public_file)
    assert public.fingerprint() == generated["fingerprint"]


@pytest.mark.usefixtures("file_env")
def test_generate_and_show_kem_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    public_file = tmp_path / "site.xwing"
    argv = ["keys", "generate", "--name", "site-a", "--kind", "kem", "--json"]
    assert _run([*argv, "--public-out", str(public_file)]) == ExitCode.OK
    generated = json.loads(capsys.readouterr().out)
    assert load_recipient_public_key(public_file).fingerprint() == (generated["fingerprint"])
    assert _run(["keys", "show", "--name", "site-a", "--kind", "kem", "--json"]) == ExitCode.OK
    assert json.loads(capsys.readouterr().out)["fingerprint"] == generated["fingerprint"]


@pytest.mark.usefixtures("file_env")
def test_generate_public_out_creates_a_missing_directory(tmp_path: Path) -> None:
    public_file = tmp_path / "new" / "nested" / "robot-7.xwing.pub"
    argv = ["keys", "generate", "--name", "robot-7", "--kind", "kem"]
    assert _run([*argv, "--public-out", str(public_file)]) == ExitCode.OK
    assert load_recipient_public_key(public_file).fingerprint()


@pytest.mark.usefixtures("file_env")
@pytest.mark.parametrize("fault", ["existing file", "unwritable directory"])
def test_generate_public_out_fails_before_storing_anything(
    tmp_path: Path, key_dir: Path, fault: str
) -> None:
    blocked = tmp_path / "blocked"
    if fault == "existing file":
        blocked.mkdir()
        public_file = blocked / "release.pub"
        public_file.write_text("someone else's file")
    else:
        blocked.write_text("a file where the directory should be")
        public_file = blocked / "sub" / "release.pub"
    argv = ["keys", "generate", "--name", "release"]
    assert _run([*argv, "--public-out", str(public_file)]) == ExitCode.INPUT
    assert not list(key_dir.glob("release.*")), "the key was stored although the export failed"
    # A retry with a usable path succeeds: nothing half-done blocks it.
    assert _run([*argv, "--public-out", str(tmp_path / "ok" / "release.pub")]) == ExitCode.OK


@pytest.mark.usefixtures("file_env")
def test_show_without_name_lists_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(["keys", "generate", "--name", "release"]) == ExitCode.OK
    assert _run(["keys", "generate", "--name", "site-a", "--kind", "kem"]) == ExitCode.OK
    capsys.readouterr()
    assert _run(["keys", "show", "--json"]) == ExitCode.OK
    listed = {(k["name"], k["purpose"]) for k in json.loads(capsys.readouterr().out)}
    assert listed == {("release", "composite-signing"), ("site-a", "xwing-kem")}


def test_exit_codes_are_distinct(
    file_env: str,
    monkeypatch: pytest.MonkeyPatch,
    key_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _run(["keys", "generate", "--name", "release"]) == ExitCode.OK
    assert _run(["keys", "generate", "--name", "release"]) == ExitCode.KEY_EXISTS
    assert _run(["keys", "show", "--name", "absent"]) == ExitCode.KEY_NOT_FOUND
    record = next(key_dir.iterdir())
    original = record.read_bytes()
    record.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert _run(["keys", "show", "--name", "release"]) == ExitCode.INTEGRITY
    record.write_bytes(original)
    monkeypatch.setenv("TG_KEY_MASTER", file_env[::-1])
    assert _run(["keys", "show", "--name", "release"]) == ExitCode.INTEGRITY
    errors = capsys.readouterr().err
    assert "TG_KEY_MASTER" in errors
    assert file_env not in errors
    assert file_env[::-1] not in errors

    monkeypatch.setenv("TG_KEY_PROVIDER", "kms")
    assert _run(["keys", "show", "--name", "release"]) == ExitCode.PROVIDER_UNAVAILABLE


def test_production_refusal_exit_code(
    monkeypatch: pytest.MonkeyPatch, key_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    monkeypatch.setenv("TG_KEY_DIR", str(key_dir))
    assert _run(["keys", "generate", "--name", "release"]) == ExitCode.CONFIG
    assert "TG_KEY_MASTER" in capsys.readouterr().err
    assert not key_dir.exists() or not any(key_dir.iterdir())


def test_cli_never_uses_a_throwaway_master(monkeypatch: pytest.MonkeyPatch, key_dir: Path) -> None:
    monkeypatch.setenv("TG_KEY_DIR", str(key_dir))
    monkeypatch.setenv("TG_ALLOW_EPHEMERAL_KEYS", "true")
    assert _run(["keys", "generate", "--name", "release"]) == ExitCode.CONFIG


@pytest.mark.usefixtures("file_env")
def test_usage_errors_exit_2() -> None:
    with pytest.raises(SystemExit) as usage:
        _run(["keys", "generate"])
    assert usage.value.code == 2
