"""Signed freshness statements: a fresh node installs nothing older than the channel's
latest release, and statements that are forged, foreign, stale or expired are refused.

Attacks go through the project's API: a stale retained announcement of v1 offered to a
node that has never installed anything while v2 exists; the same with the statement
stripped, re-signed by a stranger, edited, for another channel, expired.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tensorguard.codec import canonical_json
from tensorguard.fleet.messages import InstallOutcome, InstallReason, ReleaseAnnouncement
from tensorguard.fleet.notify import announcement_for
from tensorguard.tgsp import TrustStore
from tensorguard.tgsp._freshness import (
    FreshnessError,
    FreshnessStatement,
    StaleReleaseError,
    check_freshness,
    issue_freshness,
    verify_freshness,
)
from tests.fleet.releases import FleetKit, Keys


def test_statement_round_trip_and_refusals(fleet_keys: Keys) -> None:
    trust = TrustStore([fleet_keys.producer.public_key()])
    now = int(time.time())
    document = issue_freshness("stable", 4, fleet_keys.producer, now=now)
    statement = verify_freshness(document, trust, channel="stable", now=now)
    assert statement == FreshnessStatement("stable", 4, now, now + 7 * 86_400)
    check_freshness(statement, 4)
    check_freshness(statement, 5)
    with pytest.raises(StaleReleaseError, match="older than the signed minimum version 4"):
        check_freshness(statement, 3)

    stranger = issue_freshness("stable", 1, fleet_keys.stranger, now=now)
    with pytest.raises(FreshnessError, match="not in the trust store"):
        verify_freshness(stranger, trust, channel="stable", now=now)
    edited = json.loads(document)
    edited["statement"]["minimum_version"] = 1
    with pytest.raises(FreshnessError, match="signature rejected"):
        verify_freshness(canonical_json(edited), trust, channel="stable", now=now)
    with pytest.raises(FreshnessError, match="not 'canary'"):
        verify_freshness(document, trust, channel="canary", now=now)
    with pytest.raises(FreshnessError, match="expired"):
        verify_freshness(document, trust, channel="stable", now=now + 8 * 86_400)
    with pytest.raises(FreshnessError, match="in the future"):
        verify_freshness(document, trust, channel="stable", now=now - 3600)
    for garbage in (
        b"",
        b"{}",
        b"[]",
        document[:-2],
        document.replace(b'"minimum_version":4', b'"minimum_version":"4"'),
    ):
        with pytest.raises(FreshnessError):
            verify_freshness(garbage, trust, channel="stable", now=now)


def _stale_and_latest(kit: FleetKit) -> tuple[ReleaseAnnouncement, ReleaseAnnouncement]:
    """v1 and v2 published; the v1 announcement carries the current statement (min 2)."""
    first = kit.registry.publish(kit.build(1), kit.channel, 1)
    kit.registry.publish(kit.build(2), kit.channel, 2)
    kit.registry.publish_freshness(kit.channel, kit.keys.producer)
    stale = announcement_for(kit.registry, first, kit.fleet)
    latest_record = kit.registry.latest(kit.channel)
    assert latest_record is not None
    return stale, announcement_for(kit.registry, latest_record, kit.fleet)


def test_registry_statement_names_the_latest_release(kit: FleetKit) -> None:
    stale, latest = _stale_and_latest(kit)
    assert stale.freshness is not None
    assert stale.freshness == latest.freshness
    document = kit.registry.freshness_document(kit.channel)
    assert document is not None
    trust = TrustStore([kit.keys.producer.public_key()])
    statement = verify_freshness(document, trust, channel=kit.channel, now=int(time.time()))
    assert statement.minimum_version == 2


def test_fresh_node_refuses_an_old_release_while_a_newer_exists(
    kit: FleetKit, tmp_path: Path
) -> None:
    stale, latest = _stale_and_latest(kit)
    agent = kit.agent(tmp_path / "node")
    report = agent.handle_release(stale)
    assert report is not None
    assert (report.outcome, report.reason_code) == (InstallOutcome.REJECTED, InstallReason.ROLLBACK)
    assert "signed minimum version 2" in report.reason
    assert agent.installed_version() is None
    installed = agent.handle_release(latest)
    assert installed is not None
    assert installed.outcome is InstallOutcome.INSTALLED


@pytest.mark.parametrize("attack", ["stripped", "stranger", "edited", "expired"])
def test_forged_or_missing_statements_are_refused_when_required(
    kit: FleetKit, tmp_path: Path, attack: str
) -> None:
    stale, _ = _stale_and_latest(kit)
    now = int(time.time())
    statement: str | None
    if attack == "stripped":
        statement = None
    elif attack == "stranger":
        statement = issue_freshness("stable", 1, kit.keys.stranger, now=now).decode()
    elif attack == "edited":
        edited = json.loads(stale.freshness or "")
        edited["statement"]["minimum_version"] = 1
        statement = canonical_json(edited).decode()
    else:
        statement = issue_freshness(
            "stable", 1, kit.keys.producer, now=now - 100, valid_for_seconds=10
        ).decode()
    forged = stale.model_copy(update={"freshness": statement})
    agent = kit.agent(tmp_path / "node", require_freshness=True)
    report = agent.handle_release(forged)
    assert report is not None
    assert (report.outcome, report.reason_code) == (
        InstallOutcome.REJECTED,
        InstallReason.FRESHNESS,
    ), report.reason
    assert agent.installed_version() is None


def test_without_require_freshness_a_missing_statement_is_not_required(
    kit: FleetKit, tmp_path: Path
) -> None:
    """The documented default: statements are checked when present, required only with
    require_freshness (set it in production)."""
    stale, _ = _stale_and_latest(kit)
    agent = kit.agent(tmp_path / "node")
    report = agent.handle_release(stale.model_copy(update={"freshness": None}))
    assert report is not None
    assert report.outcome is InstallOutcome.INSTALLED


@pytest.mark.parametrize(
    ("environment", "setting", "installs"),
    [("production", None, False), ("production", False, True), ("development", True, False)],
    ids=["production-default", "production-opt-out", "development-opt-in"],
)
def test_production_requires_a_statement_unless_told_otherwise(
    kit: FleetKit,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    environment: str,
    setting: bool | None,
    installs: bool,
) -> None:
    stale, _ = _stale_and_latest(kit)
    overrides = {} if setting is None else {"require_freshness": setting}
    agent = kit.agent(tmp_path / "node", **overrides)
    monkeypatch.setenv("TG_ENVIRONMENT", environment)
    report = agent.handle_release(stale.model_copy(update={"freshness": None}))
    assert report is not None
    expected = (
        (InstallOutcome.INSTALLED, InstallReason.INSTALLED)
        if installs
        else (InstallOutcome.REJECTED, InstallReason.FRESHNESS)
    )
    assert (report.outcome, report.reason_code) == expected, report.reason
