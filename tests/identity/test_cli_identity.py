"""``tensorguard identity``: the CA on the command line, keys from the environment's provider."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tests.identity.conftest import TRUST_DOMAIN, node_csr


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, (json.loads(out) if code == ExitCode.OK else {})


def test_init_issue_revoke(
    ca_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, created = _run(
        capsys, "identity", "init", "--ca-dir", str(ca_env), "--trust-domain", TRUST_DOMAIN
    )
    assert code == ExitCode.OK
    assert created["trust_domain"] == TRUST_DOMAIN
    audit_check = [
        "audit",
        "verify",
        "--log",
        created["audit_log"],
        "--public-key",
        str(ca_env / "audit-key.pub"),
        "--fingerprint",
        created["audit_key_fingerprint"],
    ]
    assert main(audit_check) == ExitCode.OK
    capsys.readouterr()
    csr = tmp_path / "robot-1.csr.pem"
    csr.write_bytes(node_csr("robot-1"))
    out = tmp_path / "robot-1.crt"
    code, issued = _run(
        capsys, "identity", "issue", "--ca-dir", str(ca_env), "--csr", str(csr), "--out", str(out)
    )
    assert code == ExitCode.OK
    chain = x509.load_pem_x509_certificates(out.read_bytes())
    assert next(c.subject.rfc4514_string() for c in chain) == "CN=robot-1"
    assert f"{chain[0].serial_number:x}" == issued["serial"]
    assert len(chain) == 2
    code, listed = _run(capsys, "identity", "list", "--ca-dir", str(ca_env))
    assert code == ExitCode.OK
    entries = listed["certificates"]
    assert [(e["endpoint"], e["serial"]) for e in entries] == [("robot-1", issued["serial"])]
    assert 29.9 < entries[0]["days_left"] <= 30
    code, revoked = _run(
        capsys,
        "identity",
        "revoke",
        "--ca-dir",
        str(ca_env),
        "--serial",
        str(issued["serial"]),
        "--reason",
        "key_compromise",
    )
    assert code == ExitCode.OK
    assert revoked["revoked_count"] == 1
    assert (
        main(["identity", "revoke", "--ca-dir", str(ca_env), "--serial", str(issued["serial"])])
        == ExitCode.ERROR
    )
    assert "already revoked" in capsys.readouterr().err
    assert _run(capsys, "identity", "list", "--ca-dir", str(ca_env))[1]["certificates"] == []
    everything = _run(capsys, "identity", "list", "--ca-dir", str(ca_env), "--all")[1]
    assert [e["revoked"] for e in everything["certificates"]] == [True]


def test_refusals_have_their_exit_codes(
    ca_env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["identity", "init", "--ca-dir", str(ca_env), "--trust-domain", TRUST_DOMAIN]) == 0
    csr = tmp_path / "robot-1.csr.pem"
    csr.write_bytes(node_csr("robot-1"))
    base = ["identity", "issue", "--ca-dir", str(ca_env), "--csr", str(csr)]
    assert main([*base, "--days", "31", "--out", str(tmp_path / "a.crt")]) == ExitCode.POLICY
    assert (
        main([*base, "--profile", "service", "--out", str(tmp_path / "b.crt")]) == ExitCode.POLICY
    )
    csr.write_bytes(b"not a csr")
    assert main([*base, "--out", str(tmp_path / "c.crt")]) == ExitCode.INPUT
    assert main(["identity", "crl", "--ca-dir", str(tmp_path / "nowhere")]) == ExitCode.INPUT
    assert main(["identity", "init", "--ca-dir", str(ca_env)]) == ExitCode.INPUT  # exists
    assert main(["identity", "init", "--ca-dir", str(tmp_path / "ca2")]) == ExitCode.KEY_EXISTS
    err = capsys.readouterr().err
    assert "lifetime" in err
    assert "already exists" in err
    assert not list(tmp_path.glob("*.crt"))


def test_invalid_policy_is_a_config_error(ca_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["identity", "init", "--ca-dir", str(ca_env), "--trust-domain", "Not A Domain"])
    assert code == ExitCode.CONFIG
    assert "trust domain" in capsys.readouterr().err
    code = main(["identity", "init", "--ca-dir", str(ca_env), "--service-ip", "not-an-ip"])
    assert code == ExitCode.CONFIG
    assert not ca_env.exists()
