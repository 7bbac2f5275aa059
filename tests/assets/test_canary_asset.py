"""The canary sensor and the ``canary_rollout`` asset on a real Dagster instance, a real
migrated application DB and the suite's Mosquitto: the sensor waits while the canary is
observed, asks for a run when its telemetry breaches the policy, and the asset rolls the
release back (registry revocation, rolled_back row, audit and signed log, failed check).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from dagster import (
    DagsterInstance,
    RunRequest,
    SkipReason,
    build_init_resource_context,
    build_sensor_context,
    instance_for_test,
    materialize,
)

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.deployment_approval import DeploymentApproval, sign_approval
from tensorguard.fleet.db import FleetDatabase, migrate, sqlite_url
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.fleet.rollout import PROMOTED, ROLLED_BACK, Rollout, rollout_of, start_rollout
from tensorguard.gate.canary_policy import CanaryPolicy
from tensorguard.service.approvals import ApprovalStore
from tensorguard.service.nodes import NodeDirectory
from tensorguard.service.request_signing import public_key_hex
from tensorguard.service.telemetry import TelemetryReading, TelemetryStore
from tensorguard_assets.canary import canary_rollout, canary_rollout_sensor, rollout_log
from tensorguard_assets.resources import build_resources
from tests.services.mosquitto import MosquittoBroker

CHANNEL = "arm-cell"
POLICY = CanaryPolicy(
    fraction=0.5,
    min_nodes_reporting=1,
    min_samples=3,
    observation_window_s=0,
    max_wait_s=600,
    max_error_rate=0.05,
    max_mean_latency_ms=None,
    max_safety_events=0,
    max_install_failures=0,
)


@dataclass
class Stage:
    """A rollout of v2 to one of two enrolled nodes, with real resources around it."""

    fleet: str
    resources: dict[str, Any]
    registry: LocalRegistry
    database: FleetDatabase
    rollout: Rollout
    vault: Any

    def sensor(self, instance: DagsterInstance) -> Any:
        with build_sensor_context(
            instance=instance, resources={"fleet": self.resources["fleet"]}
        ) as context:
            return canary_rollout_sensor(context)

    def report(self, error_rate: float, count: int = 3) -> None:
        store = TelemetryStore(self.database, 900)
        for _ in range(count):
            store.ingest(
                self.rollout.canary_nodes[0],
                TelemetryReading(
                    message_id=secrets.token_hex(8),
                    sent_at=datetime.now(UTC),
                    installed_version=2,
                    error_rate=error_rate,
                ),
            )


def _stage(
    tmp_path: Path,
    broker: MosquittoBroker,
    monkeypatch: pytest.MonkeyPatch,
    *,
    approval_required: bool = False,
) -> Stage:
    fleet = f"plant-{secrets.token_hex(4)}"
    database_url = sqlite_url(tmp_path / "app.db")
    migrate(database_url)
    monkeypatch.setenv("DATABASE_URL", database_url)
    resources = build_resources(
        {
            "TG_ARTIFACT_ROOT": str(tmp_path / "state" / "artifacts"),
            "TG_REGISTRY_ROOT": str(tmp_path / "registry"),
            "TG_MQTT_HOST": broker.host,
            "TG_MQTT_PORT": str(broker.port),
            "TG_FLEET": fleet,
            "TG_CHANNEL": CHANNEL,
        }
    )
    vault = resources["release_keys"]
    vault.setup_for_execution(build_init_resource_context())
    vault.provider.generate_signing_key("release-signing")
    vault.teardown_after_execution(build_init_resource_context())

    registry = LocalRegistry(tmp_path / "registry")
    database = FleetDatabase(database_url)
    records = []
    for version in (1, 2):
        package = tmp_path / f"v{version}.tgsp"
        package.write_bytes(secrets.token_bytes(256))
        record = registry.publish(package, CHANNEL, version)
        database.record_release(fleet, record, "file:///x", gate_decision_digest=None, actor="t")
        records.append(record)
    nodes = NodeDirectory(database)
    for index in range(2):
        key = Ed25519PrivateKey.generate()
        nodes.enrol(
            f"arm-{index}", fleet, CHANNEL, "field", public_key_hex(key.public_key()), actor="t"
        )
    rollout = start_rollout(
        database,
        fleet=fleet,
        channel=CHANNEL,
        version=2,
        digest=records[1].digest,
        previous_version=1,
        policy=POLICY,
        policy_digest=hashlib.sha256(b"policy").hexdigest(),
        actor="t",
        approval_required=approval_required,
    )
    return Stage(fleet, resources, registry, database, rollout, vault)


def test_the_sensor_waits_then_launches_a_rollback_that_the_asset_applies(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = _stage(tmp_path, mosquitto_broker, monkeypatch)
    fleet, resources, registry, database, vault = (
        stage.fleet,
        stage.resources,
        stage.registry,
        stage.database,
        stage.vault,
    )
    with instance_for_test() as instance:
        waiting = stage.sensor(instance)
        assert isinstance(waiting, SkipReason)  # no telemetry yet, within max_wait_s
        stage.report(error_rate=0.5)
        requests = stage.sensor(instance)
        assert isinstance(requests, list)
        assert len(requests) == 1
        request = requests[0]
        assert isinstance(request, RunRequest)
        assert request.tags["tensorguard/canary_verdict"] == "rollback"

        result = materialize(
            [canary_rollout],
            resources={"fleet": resources["fleet"], "release_keys": resources["release_keys"]},
            run_config=request.run_config,
            instance=instance,
        )
    assert result.success
    metadata = result.asset_materializations_for_node("canary_rollout")[0].metadata
    assert metadata["verdict"].value == "rollback"
    assert metadata["status"].value == ROLLED_BACK
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("canary_healthy", False)]
    assert rollout_of(database, fleet, CHANNEL, 2).status == ROLLED_BACK
    assert [r.revoked for r in registry.releases(CHANNEL)] == [False, True]
    vault.setup_for_execution(build_init_resource_context())
    try:
        events = [r["event"] for r in rollout_log(resources["fleet"], vault).records()]
    finally:
        vault.teardown_after_execution(build_init_resource_context())
    assert events == ["rollout.rolled_back"]
    database.close()


def test_a_promotion_that_needs_an_approval_waits_for_a_signed_one(
    tmp_path: Path, mosquitto_broker: MosquittoBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    stage = _stage(tmp_path, mosquitto_broker, monkeypatch, approval_required=True)
    stage.report(error_rate=0.0)
    with instance_for_test() as instance:
        assert isinstance(stage.sensor(instance), SkipReason)  # healthy, but not approved
        key = CompositeSigningKey.generate()
        store = ApprovalStore(stage.database)
        store.enrol_approver(
            "ann", base64.b64encode(key.public_key().public_bytes()).decode(), actor="t"
        )
        release = stage.registry.releases(CHANNEL)[1]
        approval = DeploymentApproval(
            fleet=stage.fleet,
            channel=CHANNEL,
            version=2,
            release_digest=release.digest,
            approver="ann",
            approver_fingerprint=key.public_key().fingerprint(),
            approved_at="2026-12-02T23:55:00+00:00",
        )
        store.submit(sign_approval(approval, key), approver="ann")
        requests = stage.sensor(instance)
        assert isinstance(requests, list)
        assert [r.tags["tensorguard/canary_verdict"] for r in requests] == ["promote"]
        result = materialize(
            [canary_rollout],
            resources={
                "fleet": stage.resources["fleet"],
                "release_keys": stage.resources["release_keys"],
            },
            run_config=requests[0].run_config,
            instance=instance,
        )
    assert result.success
    assert rollout_of(stage.database, stage.fleet, CHANNEL, 2).status == PROMOTED
    checks = result.get_asset_check_evaluations()
    assert [(c.check_name, c.passed) for c in checks] == [("canary_healthy", True)]
    stage.database.close()
