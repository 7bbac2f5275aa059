"""The ``tgsp`` CLI: build, inspect, verify, open, and a distinct exit code per refusal."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode, main
from tensorguard.cli.tgsp import add_tgsp_commands
from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.digest import sha256_tree
from tensorguard.tgsp import TrustStore
from tensorguard.tgsp._keyfiles import write_key_file
from tests.tgsp.conftest import layout_of, make_tree


class Workspace:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.producer = CompositeSigningKey.generate()
        self.recipient = XWingPrivateKey.generate()
        self.outsider = XWingPrivateKey.generate()
        self.signing_key = root / "producer.key"
        self.recipient_public = root / "recipient.pub"
        self.recipient_private = root / "recipient.key"
        self.outsider_private = root / "outsider.key"
        self.trust = root / "trust.json"
        write_key_file(self.signing_key, self.producer)
        write_key_file(self.recipient_public, self.recipient.public_key())
        write_key_file(self.recipient_private, self.recipient)
        write_key_file(self.outsider_private, self.outsider)
        TrustStore([self.producer.public_key()]).save(self.trust)
        self.source = make_tree(
            root / "adapter", {"adapter_config.json": b"{}", "weights/a.bin": os.urandom(5000)}
        )
        self.package = root / "release.tgsp"

    def build(self, *extra: str) -> int:
        return main(
            [
                "tgsp", "build", str(self.source), "-o", str(self.package),
                "--signing-key", str(self.signing_key), "--recipient", str(self.recipient_public),
                "--channel", "stable", "--version", "3", "--model-name", "tiny-lora",
                "--round", "2025-01-06", *extra,
            ]
        )  # fmt: skip

    def verify(self, *extra: str) -> int:
        return main(["tgsp", "verify", str(self.package), "--trust-store", str(self.trust), *extra])

    def open(self, destination: Path, key: Path | None = None, *extra: str) -> int:
        return main(
            [
                "tgsp", "open", str(self.package), "-d", str(destination),
                "--recipient-key", str(key or self.recipient_private),
                "--trust-store", str(self.trust), *extra,
            ]
        )  # fmt: skip


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)


def test_build_verify_open_round_trip(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    assert ws.build() == ExitCode.OK
    assert ws.verify() == ExitCode.OK
    assert "VERIFIED" in capsys.readouterr().out
    destination = ws.root / "installed"
    assert ws.open(destination) == ExitCode.OK
    assert (destination / "weights" / "a.bin").read_bytes() == (
        ws.source / "weights" / "a.bin"
    ).read_bytes()


def test_inspect_prints_header_and_warns(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    assert ws.build("--annotation", "eval.loss=0.5") == ExitCode.OK
    capsys.readouterr()
    assert main(["tgsp", "inspect", str(ws.package), "--json"]) == ExitCode.OK
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["status"] == "UNVERIFIED"
    assert document["header"]["release"]["round"] == "2025-01-06"
    assert document["header"]["release"]["annotations"] == {"eval.loss": "0.5"}
    assert document["header"]["release"]["model"]["sha256"] == sha256_tree(ws.source)
    assert "does not verify" in captured.err
    assert main(["tgsp", "inspect", str(ws.package)]) == ExitCode.OK
    release = document["header"]["release"]
    created, expires = (
        datetime.fromtimestamp(release[name], UTC) for name in ("created_at", "expires_at")
    )
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("created")]
    assert line.split() == ["created", created.isoformat(), "expires", expires.isoformat()]
    assert line.split()[1].endswith("+00:00")


def test_untrusted_package_exit_code(ws: Workspace, capsys: pytest.CaptureFixture[str]) -> None:
    assert ws.build() == ExitCode.OK
    TrustStore([CompositeSigningKey.generate().public_key()]).save(ws.trust)
    assert ws.verify() == ExitCode.UNTRUSTED
    assert "not in the trust store" in capsys.readouterr().err


def test_tampered_payload_exit_code(ws: Workspace) -> None:
    assert ws.build() == ExitCode.OK
    data = bytearray(ws.package.read_bytes())
    data[-1] ^= 1
    ws.package.write_bytes(bytes(data))
    assert ws.verify() == ExitCode.INTEGRITY


def test_malformed_package_exit_code(ws: Workspace) -> None:
    ws.package.write_bytes(b"PK\x03\x04 not a package at all" * 10)
    assert ws.verify() == ExitCode.MALFORMED


def test_truncated_package_exit_code(ws: Workspace) -> None:
    assert ws.build() == ExitCode.OK
    data = ws.package.read_bytes()
    ws.package.write_bytes(data[: layout_of(data).payload_start])
    assert ws.verify() == ExitCode.MALFORMED


def test_rollback_and_channel_exit_codes(ws: Workspace) -> None:
    assert ws.build() == ExitCode.OK
    assert ws.verify("--high-water-mark", "stable=4") == ExitCode.POLICY
    assert ws.verify("--high-water-mark", "stable=3") == ExitCode.POLICY  # same version
    assert ws.verify("--high-water-mark", "stable=2") == ExitCode.OK
    assert ws.verify("--channel", "canary") == ExitCode.POLICY


def test_expired_package_exit_code(ws: Workspace) -> None:
    assert ws.build("--expires-at", "1000") == ExitCode.CONFIG  # expiry before creation
    assert not ws.package.exists()


def test_not_a_recipient_exit_code(ws: Workspace) -> None:
    assert ws.build() == ExitCode.OK
    assert ws.open(ws.root / "out", ws.outsider_private) == ExitCode.RECIPIENT
    assert not (ws.root / "out").exists()


def test_existing_destination_exit_code(ws: Workspace) -> None:
    assert ws.build() == ExitCode.OK
    (ws.root / "out").mkdir()
    assert ws.open(ws.root / "out") == ExitCode.EXTRACTION


def test_unsafe_source_exit_code(ws: Workspace) -> None:
    (ws.source / "link").symlink_to("/etc/passwd")
    assert ws.build() == ExitCode.UNSAFE_PATH


def test_permissive_private_key_exit_code(
    ws: Workspace, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.signing_key.chmod(0o644)
    assert ws.build() == ExitCode.INPUT
    assert "chmod 600" in capsys.readouterr().err


def test_missing_package_exit_code(ws: Workspace) -> None:
    assert ws.verify() == ExitCode.INPUT


def test_wrong_key_type_exit_code(ws: Workspace) -> None:
    assert ws.build() == ExitCode.OK
    assert ws.open(ws.root / "out", ws.signing_key) == ExitCode.INPUT


def test_usage_errors_exit_2(ws: Workspace) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["tgsp", "verify", str(ws.package)])
    assert caught.value.code == ExitCode.USAGE
    with pytest.raises(SystemExit) as caught:
        main(["tgsp", "verify", str(ws.package), "--trust-store", "t", "--high-water-mark", "x"])
    assert caught.value.code == ExitCode.USAGE


def test_commands_plug_into_another_parser() -> None:
    parser = argparse.ArgumentParser(prog="tensorguard")
    add_tgsp_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tgsp", "inspect", "x.tgsp"])
    assert callable(args.handler)
    assert args.package == Path("x.tgsp")
