"""The canary decision on the service's real telemetry store (SQLite, migrated).

Nodes are enrolled into the cohort :func:`canary_cohort` picks, post telemetry through
the store's ingest, and the cohort summary becomes the decision's window: what the
canary sensor will do on each evaluation.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tensorguard.fleet.canary import CanaryTelemetry, CanaryVerdict, canary_cohort, canary_decision
from tensorguard.fleet.db import FleetDatabase, migrate, sqlite_url
from tensorguard.gate.canary_policy import CanaryPolicy
from tensorguard.gate.policy import DEFAULT_POLICY_FILE, load_policy
from tensorguard.service.errors import NoTelemetryError
from tensorguard.service.nodes import NodeDirectory
from tensorguard.service.request_signing import public_key_hex
from tensorguard.service.telemetry import TelemetryReading, TelemetryStore

NODES = [f"robot-{i}" for i in range(20)]
SALT = "plant-a/stable"


def shipped_canary_policy() -> CanaryPolicy:
    """The canary section of the shipped gate policy."""
    canary = load_policy(DEFAULT_POLICY_FILE).canary
    assert canary is not None
    return canary


POLICY = shipped_canary_policy()
CANARIES = sorted(canary_cohort(NODES, POLICY.fraction, SALT))


@pytest.fixture
def store(tmp_path: Path) -> TelemetryStore:
    """A telemetry store on a fresh, migrated SQLite application DB with 20 nodes, the
    canary cohort (10 % of them: 2) enrolled as ``canary``, the rest as ``fleet``."""
    url = sqlite_url(tmp_path / "fleet.db")
    migrate(url)
    database = FleetDatabase(url)
    directory = NodeDirectory(database)
    for node_id in NODES:
        key = public_key_hex(Ed25519PrivateKey.generate().public_key())
        cohort = "canary" if node_id in CANARIES else "fleet"
        directory.enrol(node_id, "plant-a", "stable", cohort, key, actor="test")
    return TelemetryStore(database, window_s=900)


def post(store: TelemetryStore, node_id: str, count: int, **fields: object) -> None:
    for _ in range(count):
        reading = TelemetryReading(
            message_id=uuid.uuid4().hex,
            sent_at=datetime.now(UTC),
            installed_version=3,
            install_outcome="installed",
            inference_latency_ms=100.0,
            error_rate=0.005,
        )
        store.ingest(node_id, TelemetryReading(**{**vars(reading), **fields}))


def window(store: TelemetryStore, elapsed_s: float) -> CanaryTelemetry | None:
    """What the sensor reads: the canary cohort's summary, or None when it sent nothing."""
    try:
        return store.cohort_summary("canary").canary_window(elapsed_s)
    except NoTelemetryError:
        return None


def test_healthy_canaries_are_promoted_after_the_window(store: TelemetryStore) -> None:
    assert len(CANARIES) == 2
    assert canary_decision(window(store, 60), POLICY, elapsed_s=60).verdict is CanaryVerdict.WAIT
    for node_id in CANARIES:
        post(store, node_id, 10)
    early = canary_decision(window(store, 60), POLICY)
    assert early.verdict is CanaryVerdict.WAIT
    assert "observation_window_s" in early.reasons[0]
    late = window(store, POLICY.observation_window_s)
    assert late is not None
    assert (late.nodes_reporting, late.samples) == (2, 20)
    assert canary_decision(late, POLICY).verdict is CanaryVerdict.PROMOTE


def test_one_bad_canary_rolls_the_release_back(store: TelemetryStore) -> None:
    first, second = CANARIES
    post(store, first, 10)
    post(store, second, 1, install_outcome="failed", installed_version=None)
    decision = canary_decision(window(store, 60), POLICY)
    assert decision.verdict is CanaryVerdict.ROLLBACK
    assert any("max_install_failures" in reason for reason in decision.reasons)


def test_telemetry_of_other_nodes_does_not_count(store: TelemetryStore) -> None:
    others = [node_id for node_id in NODES if node_id not in CANARIES]
    for node_id in others[:5]:
        post(store, node_id, 10)
    assert window(store, 7200) is None
    verdict = canary_decision(window(store, 7200), POLICY, elapsed_s=7200).verdict
    assert verdict is CanaryVerdict.ROLLBACK  # no canary telemetry after max_wait_s
