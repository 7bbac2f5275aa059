"""``tensorguard agent node-key``: the node's fleet-service signing key, made on the node."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode, main
from tensorguard.service.node_key import NodeKeyError, load_node_key
from tensorguard.service.request_signing import public_key_hex


def test_creates_a_private_key_and_prints_its_public_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "robot-7.ed25519.pem"
    assert main(["agent", "node-key", "--out", str(key_file)]) == ExitCode.OK
    printed = capsys.readouterr().out.strip()
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert printed == public_key_hex(load_node_key(key_file).public_key())
    assert len(printed) == 64


def test_never_replaces_a_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key_file = tmp_path / "node.pem"
    assert main(["agent", "node-key", "--out", str(key_file)]) == ExitCode.OK
    before = key_file.read_bytes()
    assert main(["agent", "node-key", "--out", str(key_file)]) != ExitCode.OK
    assert "already exists" in capsys.readouterr().err
    assert key_file.read_bytes() == before


def test_a_key_readable_by_others_or_not_ed25519_is_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "node.pem"
    assert main(["agent", "node-key", "--out", str(key_file)]) == ExitCode.OK
    key_file.chmod(0o644)
    with pytest.raises(NodeKeyError, match="chmod 600"):
        load_node_key(key_file)
    garbage = tmp_path / "garbage.pem"
    garbage.write_bytes(b"not a key")
    garbage.chmod(0o600)
    with pytest.raises(NodeKeyError, match="PKCS#8"):
        load_node_key(garbage)
