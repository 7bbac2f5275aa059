"""The identity audit log: CA events signed and hash-chained; tampering is detected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.identity import CertificateAuthority, Profile
from tensorguard.identity.audit import AuditError, AuditEvent, AuditLog
from tensorguard.signed_log import LogHead
from tensorguard.tgsp._keyfiles import load_verify_key, write_key_file
from tests.identity.conftest import node_csr


@pytest.fixture
def audited(authority: CertificateAuthority) -> CertificateAuthority:
    """A CA with four entries: created, two issued (jobs named), one revoked."""
    first = authority.issue(node_csr("robot-1"), Profile.NODE, job_id="enrol-robot-1")
    authority.issue(node_csr("robot-2"), Profile.NODE, job_id="enrol-robot-2")
    authority.revoke(first.serial_number, job_id="decommission-robot-1")
    return authority


def _lines(authority: CertificateAuthority) -> list[bytes]:
    return authority.store.audit_file.read_bytes().splitlines()


def _rewrite(authority: CertificateAuthority, lines: list[bytes]) -> None:
    authority.store.audit_file.write_bytes(b"".join(line + b"\n" for line in lines))


def _cli_verify(authority: CertificateAuthority, *extra: str) -> int:
    store = authority.store
    return main(
        [
            "audit",
            "verify",
            "--log",
            str(store.audit_file),
            "--public-key",
            str(store.audit_key_file),
            *extra,
        ]
    )


def test_ca_events_are_recorded_with_job_and_endpoint(
    audited: CertificateAuthority, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = audited.audit.entries()
    assert [e["event"] for e in entries] == ["ca-created", "issued", "issued", "revoked"]
    assert [e["endpoint_id"] for e in entries[1:]] == ["robot-1", "robot-2", "robot-1"]
    assert [e["job_id"] for e in entries[1:]] == [
        "enrol-robot-1",
        "enrol-robot-2",
        "decommission-robot-1",
    ]
    assert entries[3]["details"]["serial"] == entries[1]["details"]["serial"]
    assert entries[0]["job_id"].startswith("ca-created-")
    assert _cli_verify(audited) == ExitCode.OK
    report = json.loads(capsys.readouterr().out)
    assert report["entries"] == 4
    assert report["events"] == {"ca-created": 1, "issued": 2, "revoked": 1}


def test_a_removed_entry_is_detected(
    audited: CertificateAuthority, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = _lines(audited)
    _rewrite(audited, [lines[0], lines[2], lines[3]])  # the first issuance disappears
    with pytest.raises(AuditError, match="line 2 does not follow line 1"):
        audited.audit.verify()
    assert _cli_verify(audited) == ExitCode.INTEGRITY
    assert "hash chain broken" in capsys.readouterr().err


def test_a_reordered_log_is_detected(audited: CertificateAuthority) -> None:
    lines = _lines(audited)
    _rewrite(audited, [lines[0], lines[2], lines[1], lines[3]])
    with pytest.raises(AuditError, match="hash chain broken"):
        audited.audit.verify()
    assert _cli_verify(audited) == ExitCode.INTEGRITY


def test_an_edited_entry_is_detected(audited: CertificateAuthority) -> None:
    lines = _lines(audited)
    entry = json.loads(lines[3])
    entry["record"]["endpoint_id"] = "robot-2"  # blame the revocation on another node
    lines[3] = json.dumps(entry, separators=(",", ":"), sort_keys=True).encode()
    _rewrite(audited, lines)
    with pytest.raises(AuditError, match="line 4 is not signed by the pinned audit key"):
        audited.audit.verify()
    assert _cli_verify(audited) == ExitCode.INTEGRITY


def test_a_cut_off_tail_is_detected_against_the_recorded_head(
    audited: CertificateAuthority, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli_verify(audited) == ExitCode.OK
    head = json.loads(capsys.readouterr().out)
    _rewrite(audited, _lines(audited)[:-1])  # the revocation disappears
    assert _cli_verify(audited) == ExitCode.OK  # a shorter chain is still a valid chain
    recorded = ["--expect-count", str(head["entries"]), "--expect-head", head["head"]]
    assert _cli_verify(audited, *recorded) == ExitCode.INTEGRITY
    assert "removed from the end" in capsys.readouterr().err
    with pytest.raises(AuditError, match="removed from the end"):
        audited.audit.verify(LogHead(head["entries"], head["head"]))


def test_a_log_re_signed_with_another_key_is_refused(
    audited: CertificateAuthority, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An attacker who rewrites history under their own key fails the pinned key."""
    forger = CompositeSigningKey.generate()
    forged = AuditLog(tmp_path / "forged.jsonl", forger.public_key())
    for entry in audited.audit.entries()[:-1]:
        fields = {k: v for k, v in entry.items() if k not in {"previous_sha256"}}
        forged.append(
            forger,
            AuditEvent(fields.pop("event")),
            job_id=fields["job_id"],
            endpoint_id=fields["endpoint_id"],
            details=fields["details"],
        )
    pinned = load_verify_key(audited.store.audit_key_file)
    with pytest.raises(AuditError, match="not signed by the pinned audit key"):
        AuditLog(tmp_path / "forged.jsonl", pinned).verify()
    fingerprint = ["--fingerprint", pinned.fingerprint()]
    audited.store.audit_key_file.unlink()  # the forger also swaps the key file
    write_key_file(audited.store.audit_key_file, forger.public_key())
    audited.store.audit_file.write_bytes((tmp_path / "forged.jsonl").read_bytes())
    assert _cli_verify(audited) == ExitCode.OK  # without a pinned fingerprint: fooled
    assert _cli_verify(audited, *fingerprint) == ExitCode.INTEGRITY
    assert "the audit key was replaced" in capsys.readouterr().err


def test_nothing_is_issued_when_the_audit_log_is_broken(audited: CertificateAuthority) -> None:
    lines = _lines(audited)
    _rewrite(audited, lines[1:])
    issued_before = sorted(audited.store.issued_dir.iterdir())
    with pytest.raises(AuditError):
        audited.issue(node_csr("robot-3"), Profile.NODE)
    assert sorted(audited.store.issued_dir.iterdir()) == issued_before
    assert len(audited.records()) == 2
