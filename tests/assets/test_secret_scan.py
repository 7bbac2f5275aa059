"""The secret scan finds planted keys and secrets in files and run event logs, and
nothing in a clean round's outputs."""
# No "from __future__ import annotations": Dagster reads the context annotation at runtime.

import base64
import secrets
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import AssetExecutionContext, DagsterInstance, asset, materialize

from tensorguard.crypto import XWingPrivateKey
from tensorguard.secret_scan import (
    READ_SIZE,
    configured_secrets,
    scan_tree,
    secret_patterns,
)
from tensorguard.tgsp._keyfiles import write_key_file
from tensorguard_assets import secret_scan
from tensorguard_assets.secret_scan import scan_round

MASTER = secrets.token_urlsafe(32)
ENV = {"TG_KEY_MASTER_RELEASE": MASTER, "TG_ENVIRONMENT": "development"}


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    root = tmp_path / "state" / "artifacts"
    (root / "round-1").mkdir(parents=True)
    (root / "round-1" / "evaluation_report.json").write_text('{"loss": 1.5}')
    (root / "round-1" / "adapter.safetensors").write_bytes(secrets.token_bytes(4096))
    return root


def test_a_clean_tree_has_no_findings(artifacts: Path) -> None:
    assert scan_tree(artifacts, secret_patterns(configured_secrets(ENV, None))) == []


def test_a_pem_private_key_is_found(artifacts: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"even-encrypted"),
    )
    (artifacts / "round-1" / "leak.pem").write_bytes(pem)
    [finding] = scan_tree(artifacts, [])
    assert finding.what == "PEM private key block"
    assert finding.where.endswith("leak.pem")


def test_a_tensorguard_private_key_file_is_found(artifacts: Path) -> None:
    write_key_file(artifacts / "round-1" / "node.key", XWingPrivateKey.generate())
    [finding] = scan_tree(artifacts, [])
    assert finding.what == "TensorGuard key file with a private key"


def test_a_public_key_file_is_not_a_finding(artifacts: Path) -> None:
    write_key_file(artifacts / "round-1" / "node.pub", XWingPrivateKey.generate().public_key())
    assert scan_tree(artifacts, []) == []


@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("raw", lambda v: v.encode()),
        ("hex", lambda v: v.encode().hex().encode()),
        ("base64", lambda v: base64.b64encode(v.encode())),
    ],
)
def test_a_configured_secret_is_found_in_any_encoding(
    artifacts: Path, encoding: str, encode: object
) -> None:
    assert callable(encode)
    (artifacts / "round-1" / "metrics.json").write_bytes(b'{"note": "' + encode(MASTER) + b'"}')
    findings = scan_tree(artifacts, secret_patterns(configured_secrets(ENV, None)))
    assert [f.what for f in findings] == [f"value of TG_KEY_MASTER_RELEASE ({encoding})"]
    assert MASTER not in str(findings)
    assert MASTER not in repr(findings)


def test_a_secret_across_a_read_boundary_and_a_development_master_are_found(
    artifacts: Path,
) -> None:
    dev_secrets = artifacts.parent / "dev-secrets"
    dev_secrets.mkdir()
    dev_master = secrets.token_urlsafe(48)
    (dev_secrets / "sites_master").write_text(dev_master + "\n")
    blob = bytearray(secrets.token_bytes(READ_SIZE + 100))
    start = READ_SIZE - len(dev_master) // 2
    blob[start : start + len(dev_master)] = dev_master.encode()
    (artifacts / "round-1" / "model.bin").write_bytes(bytes(blob))
    patterns = secret_patterns(configured_secrets({}, artifacts.parent))
    [finding] = scan_tree(artifacts, patterns)
    assert finding.what == "value of development master sites_master (raw)"


@asset
def chatty(context: AssetExecutionContext) -> None:
    context.log.info(f"connecting with master {MASTER}")


@asset
def quiet(context: AssetExecutionContext) -> None:
    context.log.info("nothing secret here")


def test_event_logs_are_scanned(sqlite_instance: DagsterInstance, artifacts: Path) -> None:
    patterns = secret_patterns(configured_secrets(ENV, None))
    assert materialize([quiet], instance=sqlite_instance).success
    assert scan_round(sqlite_instance, artifacts, None, patterns) == []
    assert materialize([chatty], instance=sqlite_instance).success
    findings = scan_round(sqlite_instance, artifacts, None, patterns)
    assert findings
    assert all(f.what == "value of TG_KEY_MASTER_RELEASE (raw)" for f in findings)
    assert all(f.where.startswith("run ") for f in findings)


def test_the_command_exits_1_on_a_planted_key_and_0_when_clean(
    tmp_path: Path, artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "dagster-home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    monkeypatch.setenv("TG_KEY_MASTER_RELEASE", MASTER)
    assert secret_scan.main(["--artifact-root", str(artifacts)]) == 0
    write_key_file(artifacts / "round-1" / "signing.key", XWingPrivateKey.generate())
    assert secret_scan.main(["--artifact-root", str(artifacts)]) == 1
    assert secret_scan.main(["--artifact-root", str(tmp_path / "missing")]) == 2
