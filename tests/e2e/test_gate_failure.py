"""A round that fails the release gate (impossible thresholds): the decision is recorded
with its reasons, the run fails, and nothing is packaged, published or announced."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, instance_for_test

from tensorguard.gate import DEFAULT_POLICY_FILE, GateDecision, load_policy
from tensorguard_assets.locations import ROUND_RELEASE_JOBS
from tensorguard_assets.resources import build_resources
from tests.e2e.conftest import unique_fleet
from tests.e2e.mqtt_watch import SeenMessage, TopicRecorder
from tests.e2e.rounds import (
    ROUND_RELEASE_JOB,
    SETUP_JOB,
    StageRun,
    base_model_config,
    development_process_env,
    failed_stages,
    pipeline_definitions,
    run_release,
    run_stage,
    start_round,
    tensorguard_env,
)
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.slow

ROUND = "2026-11-21"
CHANNEL = "stable"
IMPOSSIBLE_MAX_EVAL_LOSS = 0.0001
QUIET_PERIOD_S = 3.0


@dataclass(frozen=True)
class GatedRound:
    """A release run under an impossible policy, and what it left behind."""

    instance: DagsterInstance
    env: dict[str, str]
    policy_file: Path
    run: StageRun
    fleet_messages: list[SeenMessage]


def impossible_policy(path: Path) -> Path:
    """The shipped policy with a held-out loss ceiling no real model reaches."""
    document = yaml.safe_load(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))
    document["policy_version"] = int(document["policy_version"]) + 1
    document["max_eval_loss"] = IMPOSSIBLE_MAX_EVAL_LOSS
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def gated_round(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_broker: MosquittoBroker,
    prebuilt_base_model: Path,
    demo_sites: list[str],
) -> Iterator[GatedRound]:
    """Train every site, then run the release job with the impossible policy while a
    subscriber records everything on the fleet's topics."""
    state_dir = tmp_path_factory.mktemp("gated-round")
    fleet = unique_fleet("e2e-gate")
    env = tensorguard_env(state_dir, fleet=fleet, broker=mosquitto_broker)
    policy_file = impossible_policy(state_dir / "impossible-policy.yaml")
    definitions = pipeline_definitions(env)
    with development_process_env(), instance_for_test() as instance:
        stages = start_round(
            definitions,
            instance,
            ROUND,
            registered_sites=demo_sites,
            trained_sites=demo_sites,
            run_config={SETUP_JOB: base_model_config(prebuilt_base_model)},
        )
        assert all(run.success for run in stages.values()), failed_stages(stages)
        decrypted = run_release(definitions, instance, ROUND, jobs=ROUND_RELEASE_JOBS[:-1])
        assert decrypted.success, decrypted.failure_messages()
        with TopicRecorder(mosquitto_broker, f"tensorguard/v1/{fleet}/#") as recorder:
            run = run_stage(
                definitions,
                instance,
                ROUND_RELEASE_JOB,
                ROUND,
                run_config={
                    "ops": {"gate_decision": {"config": {"policy_file": str(policy_file)}}}
                },
            )
            fleet_messages = recorder.wait_for_count(1, timeout=QUIET_PERIOD_S)
        yield GatedRound(instance, env, policy_file, run, fleet_messages)


def test_release_run_fails_at_the_gate_with_the_reason(gated_round: GatedRound) -> None:
    assert not gated_round.run.success
    messages = gated_round.run.failure_messages()
    assert "gate_decision" in messages
    assert "gate_passed" in messages
    assert gated_round.run.check_results()["gate_decision.gate_passed"] is False
    [gate_check] = [
        evaluation
        for evaluation in gated_round.run.result.get_asset_check_evaluations()
        if evaluation.check_name == "gate_passed"
    ]
    assert gate_check.description is not None
    assert gate_check.description.startswith("eval_loss: FAILED: global eval loss")
    assert f"exceeds the maximum {IMPOSSIBLE_MAX_EVAL_LOSS:g}" in gate_check.description
    run_log_errors = [
        entry.user_message
        for entry in gated_round.instance.all_logs(gated_round.run.run_id)
        if entry.level == logging.ERROR
    ]
    assert f"gate: {gate_check.description}" in run_log_errors


def test_gate_decision_is_recorded_as_failed_with_reasons_and_policy(
    gated_round: GatedRound,
) -> None:
    metadata = gated_round.run.metadata("gate_decision")
    report = gated_round.run.metadata("evaluation_report")
    policy = load_policy(gated_round.policy_file)
    assert metadata["passed"] is False
    assert metadata["policy_version"] == policy.policy_version
    assert metadata["policy_digest"] == policy.digest()
    assert "eval_loss: FAILED" in metadata["reasons"]
    decision = GateDecision.from_json(Path(metadata["path"]).read_bytes())
    assert not decision.passed
    assert decision.digest() == metadata["decision_digest"]
    [failure] = decision.failures
    # The metadata shows 4 significant digits; the report file keeps full precision.
    losses = json.loads(Path(report["path"]).read_text(encoding="utf-8"))["losses"]
    assert failure.startswith("eval_loss: FAILED")
    assert f"{losses['global_adapter']:.6g}" in failure
    assert decision.evidence.eval_loss_global == losses["global_adapter"]
    assert decision.evidence.eval_loss_global == pytest.approx(report["eval_loss_global"], rel=1e-3)


def test_nothing_is_packaged_or_published(gated_round: GatedRound) -> None:
    assert gated_round.run.materialized_assets() >= {"evaluation_report", "gate_decision"}
    assert gated_round.run.materialized_assets().isdisjoint({"tgsp_package", "release"})
    for asset_name in ("tgsp_package", "release"):
        records = gated_round.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset_name)), limit=1
        ).records
        assert records == [], asset_name
    fleet = build_resources(gated_round.env)["fleet"]
    assert fleet.registry.releases(CHANNEL) == []
    registry_files = list(Path(fleet.registry_root).rglob("*.tgsp"))
    assert registry_files == []
    artifacts = Path(gated_round.env["TG_ARTIFACT_ROOT"])
    assert not (artifacts / "tgsp_package").exists()
    database = fleet.database()
    try:
        assert database.releases(gated_round.env["TG_FLEET"], CHANNEL) == []
    finally:
        database.close()


def test_no_mqtt_message_reaches_the_fleet(gated_round: GatedRound) -> None:
    assert gated_round.fleet_messages == []
