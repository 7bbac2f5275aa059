"""The certificate inventory and the expiry check (core and ``identity check``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.identity import CertificateAuthority, Profile
from tensorguard.identity.authority import utc_now
from tensorguard.identity.enrol import enrol_node
from tensorguard.identity.inventory import crls_due, endpoint_inventory, expiring_within
from tests.identity.conftest import node_csr, service_csr


def test_each_endpoint_shows_its_certificate_in_force(authority: CertificateAuthority) -> None:
    now = utc_now()
    authority.issue(node_csr("robot-1"), Profile.NODE, lifetime=timedelta(days=3))
    renewed = authority.issue(node_csr("robot-1"), Profile.NODE, lifetime=timedelta(days=20))
    authority.issue(node_csr("robot-2"), Profile.NODE, lifetime=timedelta(days=5))
    gone = authority.issue(node_csr("robot-3"), Profile.NODE)
    authority.revoke(gone.serial_number)
    authority.issue(service_csr("broker.fleet.test.internal"), Profile.SERVICE)
    inventory = endpoint_inventory(authority.records(), issuer="CN=test", now=now)
    assert [(e.profile.value, e.endpoint) for e in inventory] == [
        ("node", "robot-2"),
        ("node", "robot-1"),
        ("service", "broker.fleet.test.internal"),
    ]
    robot_1 = inventory[1]
    assert robot_1.serial == f"{renewed.serial_number:x}"
    assert 19.9 < robot_1.days_left <= 20
    assert [e.endpoint for e in expiring_within(inventory, 7)] == ["robot-2"]
    later = endpoint_inventory(authority.records(), issuer="CN=test", now=now + timedelta(days=6))
    assert later[0].expired
    assert [e.endpoint for e in expiring_within(later, 0)] == ["robot-2"]


def test_identity_check_fails_before_an_expiry(
    tmp_path: Path, ca_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = ca_env
    assert main(["identity", "init", "--ca-dir", str(ca_dir)]) == ExitCode.OK
    request = enrol_node(tmp_path / "node", tmp_path / "out", node_id="robot-1")
    issue = ["identity", "issue", "--ca-dir", str(ca_dir), "--csr", str(request.csr_file)]
    assert main([*issue, "--days", "5", "--out", str(tmp_path / "robot-1.crt")]) == ExitCode.OK
    capsys.readouterr()
    check = ["identity", "check", "--ca-dir", str(ca_dir)]
    assert main([*check, "--within-days", "4"]) == ExitCode.OK
    assert main([*check, "--within-days", "7"]) == ExitCode.POLICY
    assert "node robot-1 (" in capsys.readouterr().err
    # the CRL is valid for 7 days: a check 8 days ahead finds it stale
    assert main([*check, "--within-days", "4", "--crl-within-days", "8"]) == ExitCode.POLICY
    assert "run `tensorguard identity crl`" in capsys.readouterr().err


def test_a_stale_crl_is_due(authority: CertificateAuthority) -> None:
    now = utc_now()
    crls = authority.published_crls()
    assert len(crls) == 1
    assert crls_due(crls, now, 1) == []
    assert crls_due(crls, now + timedelta(days=6, hours=12), 1) == [
        authority.intermediate.subject.rfc4514_string()
    ]
    authority.publish_crl(now=now + timedelta(days=6, hours=12))
    assert crls_due(authority.published_crls(), now + timedelta(days=6, hours=12), 1) == []
