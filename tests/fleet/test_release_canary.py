"""The release step's canary stage: when a release goes to a canary cohort first, and
what starting one records (a migrated SQLite application DB, a real registry)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from tensorguard.fleet.db import FleetDatabase, migrate, sqlite_url
from tensorguard.fleet.models import AnnouncementOutboxRow, ReleaseRow
from tensorguard.fleet.registry import LocalRegistry, ReleaseRecord
from tensorguard.fleet.rollout import CANARY, RolloutError, rollout_of
from tensorguard.gate import GateDecision, evaluate_gate, parse_policy
from tensorguard.release_canary import canary_plan, record_and_start_canary
from tensorguard.service.nodes import NodeDirectory
from tensorguard.service.request_signing import public_key_hex
from tests.gate.test_gate import good_evidence, policy_document

CHANNEL = "stable"
CANARY_SECTION: dict[str, Any] = {
    "fraction": 0.5,
    "min_nodes_reporting": 1,
    "min_samples": 1,
    "observation_window_s": 0,
    "max_wait_s": 60,
    "max_error_rate": 0.05,
    "max_mean_latency_ms": None,
    "max_safety_events": 0,
    "max_install_failures": 0,
}


def _decision(**sections: Any) -> GateDecision:
    return evaluate_gate(parse_policy(policy_document(**sections)), good_evidence())


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "app.db")
    migrate(url)
    return url


def _publish(registry: LocalRegistry, tmp_path: Path, version: int) -> ReleaseRecord:
    package = tmp_path / f"v{version}.tgsp"
    package.write_bytes(secrets.token_bytes(64))
    return registry.publish(package, CHANNEL, version)


def _enrol(database_url: str, fleet: str, count: int) -> None:
    database = FleetDatabase(database_url)
    try:
        for index in range(count):
            key = public_key_hex(Ed25519PrivateKey.generate().public_key())
            NodeDirectory(database).enrol(f"n{index}", fleet, CHANNEL, "c", key, actor="t")
    finally:
        database.close()


def test_when_a_release_goes_to_a_canary_first(tmp_path: Path, database_url: str) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    first = _publish(registry, tmp_path, 1)
    with_canary = _decision(canary=CANARY_SECTION)
    plan = canary_plan(
        registry, first, _decision(), database_url=database_url, fleet="f", production=False
    )
    assert not plan.applies
    assert "no canary section" in plan.note
    plan = canary_plan(
        registry, first, with_canary, database_url=database_url, fleet="f", production=False
    )
    assert not plan.applies
    assert "first release" in plan.note
    second = _publish(registry, tmp_path, 2)
    plan = canary_plan(
        registry, second, with_canary, database_url=database_url, fleet="f", production=False
    )
    assert not plan.applies  # no enrolled node: development releases to the channel
    assert "no edge node" in plan.note
    with pytest.raises(RolloutError, match="production refuses"):
        canary_plan(
            registry, second, with_canary, database_url=database_url, fleet="f", production=True
        )
    _enrol(database_url, "f", 4)
    plan = canary_plan(
        registry, second, with_canary, database_url=database_url, fleet="f", production=True
    )
    assert (plan.applies, plan.previous_version) == (True, 1)


def test_starting_a_canary_records_the_release_without_a_channel_announcement(
    tmp_path: Path, database_url: str
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    _publish(registry, tmp_path, 1)
    second = _publish(registry, tmp_path, 2)
    _enrol(database_url, "f", 4)
    decision = _decision(canary=CANARY_SECTION)
    plan = canary_plan(
        registry, second, decision, database_url=database_url, fleet="f", production=False
    )
    rollout, topics = record_and_start_canary(
        registry,
        second,
        plan,
        database_url=database_url,
        fleet="f",
        mqtt=None,
        decision=decision,
        actor="t",
    )
    assert topics == []
    assert rollout.status == CANARY
    assert len(rollout.canary_nodes) == 2  # half of four
    assert rollout.previous_version == 1
    assert not rollout.approval_required
    database = FleetDatabase(database_url)
    try:
        assert rollout_of(database, "f", CHANNEL, 2) == rollout
        with database.session() as session:
            assert session.scalars(select(ReleaseRow.version)).all() == [2]
            assert session.scalars(select(AnnouncementOutboxRow)).all() == []
    finally:
        database.close()
