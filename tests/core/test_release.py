"""The release recipe without Dagster: real gate decisions, TGSP packages and registry."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.digest import sha256_path
from tensorguard.federation._privacy import DPRule
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._server_optimizer import ServerOptimizerRule
from tensorguard.fleet.db import FleetDatabase, migrate, sqlite_url
from tensorguard.fleet.errors import ReleaseVersionError
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.outbox import pending_announcements
from tensorguard.fleet.registry import LocalRegistry, ReleaseRecord
from tensorguard.gate import (
    BOUND_CRITERIA,
    DEFAULT_POLICY_FILE,
    PRUNED_MODEL,
    FirstRelease,
    GateDecision,
    GateEvidence,
    MoaiSelfCheck,
    PreviousRelease,
)
from tensorguard.model_card import MODEL_CARD_FILE, RoundFacts, TrainingSettings
from tensorguard.release import (
    DECISION_FILE,
    REPORT_FILE,
    LastReleaseComparison,
    PackagedRelease,
    ReleaseBlockedError,
    ReleaseCandidate,
    ReleaseError,
    build_release_package,
    compare_with_last_release,
    decide_release,
    gate_evidence,
    load_passed_decision,
    moai_self_check_evidence,
    next_version,
    publish_release,
    record_and_announce,
    release_metadata,
    stage_release,
)
from tensorguard.tgsp import (
    PackageSignatureError,
    TrustStore,
    UnknownSignerError,
    inspect_package,
    open_package,
    verify_package,
)
from tests.services.process import free_port

CHANNEL = "stable"
FLEET = "release-tests"
REQUIRED_CHECKS = {
    "aggregated_update.quorum_met": True,
    "global_adapter.artifact_integrity": True,
    "pruned_model.two_four_pattern_exact": True,
    "onnx_model.onnx_parity": True,
    "moai_export.moai_hashes_match": True,
    "moai_export.moai_self_check": True,
}


@dataclass(frozen=True)
class ReleaseKeys:
    signer: CompositeSigningKey
    stranger: CompositeSigningKey
    node: XWingPrivateKey


@pytest.fixture(scope="module")
def keys() -> ReleaseKeys:
    return ReleaseKeys(
        CompositeSigningKey.generate(), CompositeSigningKey.generate(), XWingPrivateKey.generate()
    )


def report(
    global_loss: float = 2.0,
    base_loss: float = 2.5,
    last: dict[str, Any] | None = None,
    pruned_loss: float = 2.04,
) -> dict[str, Any]:
    return {
        "round": "2026-11-20",
        "held_out_digest": "ab" * 32,
        "losses": {
            "base_model": base_loss,
            "global_adapter": global_loss,
            "pruned_model": pruned_loss,
        },
        "last_release": last if last is not None else {"kind": "first_release"},
    }


def decision_for(document: dict[str, Any], **overrides: Any) -> GateDecision:
    measured: dict[str, Any] = {
        "onnx_max_abs_diff": 1e-5,
        "sparsity": 0.5,
        "moai_self_check": MoaiSelfCheck.from_measurement(1e-5, 1e-4),
        "checks": REQUIRED_CHECKS,
    }
    measured.update(overrides)
    return decide_release(gate_evidence(document, **measured))


@pytest.fixture
def passed() -> GateDecision:
    decision = decision_for(report())
    assert decision.passed, decision.failures
    return decision


@pytest.fixture
def failed() -> GateDecision:
    decision = decision_for(report(global_loss=3.0, base_loss=2.5))
    assert not decision.passed
    return decision


def candidate_for(
    tmp_path: Path, decision: GateDecision, round_id: str = "2026-11-20"
) -> ReleaseCandidate:
    adapter = tmp_path / "artifacts" / "global_adapter"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\x01\x02" * 512)
    pruned = tmp_path / "artifacts" / "pruned_model"
    pruned.mkdir()
    (pruned / "model.safetensors").write_bytes(b"\x00\x03" * 256)
    report_file = tmp_path / "artifacts" / REPORT_FILE
    report_file.write_text(json.dumps(report()))
    decision_file = tmp_path / "artifacts" / DECISION_FILE
    decision_file.write_bytes(decision.canonical_json())
    return ReleaseCandidate(
        round_id=round_id,
        contents={
            "global_adapter": adapter,
            PRUNED_MODEL: pruned,
            REPORT_FILE: report_file,
            DECISION_FILE: decision_file,
        },
        adapter_digest=sha256_path(adapter),
        base_model_digest="cd" * 32,
        decision=decision,
    )


def build(
    tmp_path: Path,
    keys: ReleaseKeys,
    decision: GateDecision,
    registry: LocalRegistry,
    round_id: str = "2026-11-20",
) -> tuple[ReleaseCandidate, Path, int]:
    candidate = candidate_for(tmp_path, decision, round_id)
    package = build_release_package(
        candidate,
        tmp_path / "package",
        signer=keys.signer,
        recipients=[keys.node.public_key()],
        registry=registry,
        channel=CHANNEL,
        validity_days=30,
    )
    assert package.verified, package.verification_error
    return candidate, package.path, package.version


def publish(
    registry: LocalRegistry,
    package: Path,
    decision: GateDecision,
    signer: CompositeSigningKey,
    metadata: dict[str, str | float] | None = None,
) -> ReleaseRecord:
    """Publish ``package`` on the test channel, trusting only ``signer``."""
    return publish_release(
        registry,
        package,
        channel=CHANNEL,
        decision=decision,
        trust_store=TrustStore([signer.public_key()]),
        metadata=metadata or {},
    )


# --- gate evidence and decision ---------------------------------------------------------


def opened_package(tmp_path: Path, keys: ReleaseKeys, package: Path) -> Path:
    """Decrypt and verify ``package`` into a fresh directory; return it."""
    opened = tmp_path / "opened"
    open_package(
        package,
        opened,
        recipient_key=keys.node,
        trust_store=TrustStore([keys.signer.public_key()]),
    )
    return opened


def test_a_pruned_model_within_budget_ships(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    assert passed.excluded == ()
    _, package, _ = build(tmp_path, keys, passed, LocalRegistry(tmp_path / "registry"))
    opened = opened_package(tmp_path, keys, package)
    assert (opened / PRUNED_MODEL / "model.safetensors").is_file()


def test_a_pruned_model_over_budget_is_left_out_under_the_default_policy(
    tmp_path: Path, keys: ReleaseKeys
) -> None:
    decision = decision_for(report(global_loss=2.0, pruned_loss=2.5))
    assert decision.passed, decision.failures
    assert decision.excluded == (PRUNED_MODEL,)
    _, package, _ = build(tmp_path, keys, decision, LocalRegistry(tmp_path / "registry"))
    opened = opened_package(tmp_path, keys, package)
    assert not (opened / PRUNED_MODEL).exists()
    assert (opened / "global_adapter").is_dir()
    assert json.loads((opened / DECISION_FILE).read_bytes())["excluded"] == [PRUNED_MODEL]
    assert PRUNED_MODEL not in {
        entry.path.split("/")[0] for entry in inspect_package(package).header.files
    }


def test_first_release_evidence_passes_the_default_policy(passed: GateDecision) -> None:
    assert isinstance(passed.evidence.last_release, FirstRelease)
    assert passed.evidence.eval_loss_global == 2.0
    assert passed.evidence.checks == REQUIRED_CHECKS


def test_a_regression_against_the_last_release_fails_the_gate() -> None:
    last = {"kind": "previous_release", "version": 3, "eval_loss": 1.5}
    decision = decision_for(report(global_loss=2.0, last=last))
    assert decision.evidence.last_release == PreviousRelease(version=3, eval_loss=1.5)
    assert not decision.passed
    assert any("regression" in failure for failure in decision.failures)


def test_an_unavailable_last_release_is_missing_evidence_not_a_pass() -> None:
    decision = decision_for(report(last={"kind": "unavailable", "version": 2}))
    assert decision.evidence.last_release is None
    assert not decision.passed


def test_a_failed_check_fails_the_gate() -> None:
    checks = {**REQUIRED_CHECKS, "onnx_model.onnx_parity": False}
    decision = decision_for(report(), checks=checks)
    assert not decision.passed
    assert any("onnx_model.onnx_parity" in failure for failure in decision.failures)


@pytest.mark.parametrize(
    "document",
    [
        {"losses": {}, "held_out_digest": "x"},
        {"losses": {}, "last_release": {"kind": "someday"}},
        {"losses": {}, "last_release": {"kind": "previous_release", "version": 2}},
    ],
)
def test_malformed_reports_are_refused(document: dict[str, Any]) -> None:
    with pytest.raises(ReleaseError):
        gate_evidence(document, onnx_max_abs_diff=0.0, sparsity=0.5, checks={})


def test_last_release_comparison_round_trips_through_the_report() -> None:
    for comparison in (
        LastReleaseComparison("first_release"),
        LastReleaseComparison("previous_release", 4, 1.25),
        LastReleaseComparison("unavailable", 4),
    ):
        assert LastReleaseComparison.from_document(comparison.to_document()) == comparison


def test_a_failed_decision_file_is_refused(tmp_path: Path, failed: GateDecision) -> None:
    path = tmp_path / DECISION_FILE
    path.write_bytes(failed.canonical_json())
    with pytest.raises(ReleaseBlockedError, match="release gate failed"):
        load_passed_decision(path)


def test_a_passed_decision_file_round_trips(tmp_path: Path, passed: GateDecision) -> None:
    path = tmp_path / DECISION_FILE
    path.write_bytes(passed.canonical_json())
    assert load_passed_decision(path).digest() == passed.digest()


# --- comparison with the last release ---------------------------------------------------


def test_comparison_on_an_empty_channel_is_a_first_release(tmp_path: Path) -> None:
    registry = LocalRegistry(tmp_path / "registry")

    def never(_: Path) -> float:
        raise AssertionError("nothing to evaluate")

    assert compare_with_last_release(registry, CHANNEL, "ab" * 32, never) == (
        LastReleaseComparison("first_release")
    )


def test_comparison_re_evaluates_the_last_adapter_or_reuses_a_matching_loss(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    candidate, package, _ = build(tmp_path, keys, passed, registry)
    adapter = candidate.contents["global_adapter"]
    metadata = release_metadata(
        round_id="2026-11-20",
        report=report(global_loss=1.75),
        report_digest="ef" * 32,
        adapter_path=adapter,
        adapter_digest=candidate.adapter_digest,
        decision=passed,
    )
    publish(registry, package, passed, keys.signer, metadata)
    evaluated: list[Path] = []

    def adapter_loss(path: Path) -> float:
        evaluated.append(path)
        return 1.5

    assert compare_with_last_release(registry, CHANNEL, "00" * 32, adapter_loss) == (
        LastReleaseComparison("previous_release", 1, 1.5)
    )
    assert evaluated == [adapter]
    # The adapter changed on disk: only a loss on the same held-out set is reused.
    (adapter / "adapter_model.safetensors").write_bytes(b"changed")
    assert compare_with_last_release(registry, CHANNEL, "ab" * 32, adapter_loss) == (
        LastReleaseComparison("previous_release", 1, 1.75)
    )
    assert compare_with_last_release(registry, CHANNEL, "00" * 32, adapter_loss) == (
        LastReleaseComparison("unavailable", 1)
    )
    assert evaluated == [adapter]


# --- staging, versioning and the package ------------------------------------------------


def test_staging_copies_files_and_trees_and_clears_leftovers(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.bin").write_bytes(b"a")
    single = tmp_path / "one.json"
    single.write_text("{}")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "leftover").write_text("old")
    stage_release({"tree": tree, "one.json": single}, staging)
    assert sorted(str(p.relative_to(staging)) for p in staging.rglob("*")) == [
        "one.json",
        "tree",
        "tree/sub",
        "tree/sub/a.bin",
    ]


@pytest.mark.parametrize("name", ["../escape", "a/b", ".."])
def test_staging_refuses_unsafe_names(tmp_path: Path, name: str) -> None:
    source = tmp_path / "file"
    source.write_text("x")
    with pytest.raises(ReleaseError):
        stage_release({name: source}, tmp_path / "staging")


def test_staging_refuses_a_missing_artifact(tmp_path: Path) -> None:
    with pytest.raises(ReleaseError, match="does not exist"):
        stage_release({"gone": tmp_path / "gone"}, tmp_path / "staging")


def test_package_is_signed_encrypted_and_names_the_round_and_decision(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    candidate, package, version = build(tmp_path, keys, passed, registry)
    assert version == 1
    assert not (tmp_path / "package" / "staging").exists()
    header = inspect_package(package).header
    assert header.release.gate_decision_digest == passed.digest()
    assert header.release.round_id == "2026-11-20"
    assert header.release.model.digest == candidate.adapter_digest
    assert header.release.expires_at - header.release.created_at == 30 * 86_400
    opened = opened_package(tmp_path, keys, package)
    assert json.loads((opened / DECISION_FILE).read_bytes()) == json.loads(passed.canonical_json())
    assert sha256_path(opened / "global_adapter") == candidate.adapter_digest


def test_a_failed_gate_builds_nothing(
    tmp_path: Path, keys: ReleaseKeys, failed: GateDecision
) -> None:
    with pytest.raises(ReleaseBlockedError):
        build(tmp_path, keys, failed, LocalRegistry(tmp_path / "registry"))
    assert not (tmp_path / "package").exists()


def test_no_recipients_builds_nothing(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    with pytest.raises(ReleaseError, match="enrolled edge node"):
        build_release_package(
            candidate_for(tmp_path, passed),
            tmp_path / "package",
            signer=keys.signer,
            recipients=[],
            registry=LocalRegistry(tmp_path / "registry"),
            channel=CHANNEL,
            validity_days=30,
        )


# --- publication ------------------------------------------------------------------------


def test_publication_versions_increase_and_metadata_is_recorded(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    versions = []
    packages = []
    for attempt in range(2):
        candidate, package, version = build(tmp_path / f"r{attempt}", keys, passed, registry)
        packages.append(package)
        metadata = release_metadata(
            round_id=f"round-{attempt}",
            report=report(),
            report_digest="ef" * 32,
            adapter_path=candidate.contents["global_adapter"],
            adapter_digest=candidate.adapter_digest,
            decision=passed,
        )
        record = publish(registry, package, passed, keys.signer, metadata)
        assert record.version == version
        assert record.metadata["gate_decision_digest"] == passed.digest()
        assert record.metadata["eval_loss"] == 2.0
        versions.append(record.version)
    assert versions == [1, 2]
    assert next_version(registry, CHANNEL) == 3
    # Re-publishing an old package is refused by the registry's monotonic versions.
    with pytest.raises(ReleaseVersionError):
        publish(registry, packages[0], passed, keys.signer)
    # The newest package published again (a release step re-run after a later failure)
    # resumes with its record; the registry holds it once.
    assert publish(registry, packages[1], passed, keys.signer) == record
    assert [r.version for r in registry.releases(CHANNEL)] == [1, 2]


def test_a_backfilled_older_round_is_archived_never_latest_nor_announced(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    published: dict[str, ReleaseRecord] = {}
    rounds = ("2026-12-01", "2026-11-30", "2026-12-02")  # the middle one is a backfill
    for round_id in rounds:
        _, package, _ = build(tmp_path / round_id, keys, passed, registry, round_id)
        published[round_id] = publish(registry, package, passed, keys.signer)
        assert registry.latest(CHANNEL) == published[max(published)]
    newer, backfill, newest = (published[r] for r in rounds)
    # Recorded from the package's signed header; versions still strictly increase.
    assert tuple(r.round_id for r in registry.releases(CHANNEL)) == rounds
    assert [newer.version, backfill.version, newest.version] == [1, 2, 3]
    assert (newer.archived, backfill.archived, newest.archived) == (False, True, False)
    assert next_version(registry, CHANNEL) == 4
    # A broker nobody listens on: the backfill is not queued, the newest release is.
    url = sqlite_url(tmp_path / "fleet.db")
    migrate(url)
    unreachable = MqttSettings(port=free_port(), timeout_s=1)
    skipped = record_and_announce(
        registry,
        backfill,
        database_url=url,
        fleet=FLEET,
        mqtt=unreachable,
        decision=passed,
        actor="test",
    )
    assert (skipped.state, skipped.topic) == ("not_announced", None)
    queued = record_and_announce(
        registry,
        newest,
        database_url=url,
        fleet=FLEET,
        mqtt=unreachable,
        decision=passed,
        actor="test",
    )
    assert queued.state == "queued"
    assert "cannot reach the MQTT broker" in queued.detail
    database = FleetDatabase(url)
    try:
        assert [row.version for row in pending_announcements(database)] == [newest.version]
    finally:
        database.close()


def test_a_failed_gate_publishes_nothing(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision, failed: GateDecision
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    _, package, _ = build(tmp_path, keys, passed, registry)
    with pytest.raises(ReleaseBlockedError):
        publish(registry, package, failed, keys.signer)
    assert registry.latest(CHANNEL) is None


def test_a_package_for_another_decision_is_not_published(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    _, package, _ = build(tmp_path, keys, passed, registry)
    other = decision_for(report(global_loss=1.9))
    assert other.passed
    assert other.digest() != passed.digest()
    with pytest.raises(ReleaseError, match="names gate decision"):
        publish(registry, package, other, keys.signer)
    assert registry.latest(CHANNEL) is None


def test_a_package_from_an_unpinned_signer_is_not_published(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    _, package, _ = build(tmp_path, keys, passed, registry)
    with pytest.raises((UnknownSignerError, PackageSignatureError)):
        publish(registry, package, passed, keys.stranger)
    assert registry.latest(CHANNEL) is None


@pytest.mark.parametrize("service_url", [None, "https://fleet.example:8443/"])
def test_a_published_release_is_recorded_in_the_database(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision, service_url: str | None
) -> None:
    registry = LocalRegistry(tmp_path / "registry")
    _, package, _ = build(tmp_path, keys, passed, registry)
    record = publish(registry, package, passed, keys.signer)
    url = sqlite_url(tmp_path / "fleet.db")
    migrate(url)
    outcome = record_and_announce(
        registry,
        record,
        database_url=url,
        fleet=FLEET,
        mqtt=None,
        decision=passed,
        actor="test",
        service_url=service_url,
    )
    assert (outcome.state, outcome.topic) == ("not_announced", None)
    database = FleetDatabase(url)
    try:
        [row] = database.releases(FLEET, CHANNEL)
    finally:
        database.close()
    assert (row.version, row.digest) == (record.version, record.digest)
    expected_location = (
        registry.location(record)
        if service_url is None
        else f"https://fleet.example:8443/v1/packages/{CHANNEL}/{record.version}"
    )
    assert row.location == expected_location
    assert row.gate_decision_digest == passed.digest()


def test_gate_evidence_feeds_checks_through_unchanged() -> None:
    evidence = gate_evidence(report(), onnx_max_abs_diff=None, sparsity=None, checks={})
    assert isinstance(evidence, GateEvidence)
    assert evidence.onnx_max_abs_diff is None
    assert evidence.eval_loss_pruned == 2.04
    assert evidence.moai_self_check is None
    assert evidence.checks == {}


def test_moai_evidence_keeps_the_bound_and_outcome_not_the_measured_error() -> None:
    recorded = {"self_check_max_abs_error": 2.5e-6, "self_check_tolerance": 1e-4}
    assert moai_self_check_evidence(recorded) == MoaiSelfCheck(error_bound=1e-4, within_bound=True)
    over = {**recorded, "self_check_max_abs_error": 3e-4}
    assert not moai_self_check_evidence(over).within_bound
    with pytest.raises(ReleaseError, match=r"self_check_tolerance.*re-materialise moai_export"):
        moai_self_check_evidence({"self_check_max_abs_error": 2.5e-6})


# --- the model card ---------------------------------------------------------------------

SITES = ("hospital-north", "clinic-south", "lab-east")


def round_facts(*, dp: DPRule | None = None, epsilon: float | None = None) -> RoundFacts:
    reference = {
        "base.layers.0.q_proj.lora_A.default.weight": torch.zeros(4, 16),
        "base.layers.0.q_proj.lora_B.default.weight": torch.zeros(16, 4),
        "base.layers.0.v_proj.lora_A.default.weight": torch.zeros(4, 16),
        "base.layers.0.v_proj.lora_B.default.weight": torch.zeros(16, 4),
    }
    spec = RoundSpec.from_reference(
        round_id="2026-11-20",
        base_model_digest="cd" * 32,
        reference=reference,
        max_site_weight=100.0,
        min_sites=3,
        clip_norm=1.0,
        frozen_lora_a=True,
        server_optimizer=ServerOptimizerRule(name="fedadam", learning_rate=0.5),
        dp=dp,
    )
    return RoundFacts(
        site_ids=SITES,
        training=TrainingSettings.from_round_spec(spec, local_steps=(7, 7, 5)),
        dp_epsilon=(epsilon, 3 * epsilon) if epsilon is not None else None,
    )


def build_with_card(
    tmp_path: Path, keys: ReleaseKeys, decision: GateDecision, facts: RoundFacts | None
) -> PackagedRelease:
    candidate = dataclasses.replace(candidate_for(tmp_path, decision), round_facts=facts)
    package = build_release_package(
        candidate,
        tmp_path / "package",
        signer=keys.signer,
        recipients=[keys.node.public_key()],
        registry=LocalRegistry(tmp_path / "registry"),
        channel=CHANNEL,
        validity_days=30,
    )
    assert package.verified, package.verification_error
    return package


def table_rows(card: str) -> dict[str, list[str]]:
    """Markdown table rows of ``card`` by their first cell."""
    rows = [line.strip("|").split("|") for line in card.splitlines() if line.startswith("| ")]
    return {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows}


def test_the_model_card_is_in_the_package_and_covered_by_the_signature(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    package = build_with_card(tmp_path, keys, passed, round_facts())
    header = inspect_package(package.path).header
    [entry] = [e for e in header.files if e.path == MODEL_CARD_FILE]
    assert entry in package.manifest
    opened = opened_package(tmp_path, keys, package.path)
    card = (opened / MODEL_CARD_FILE).read_text(encoding="utf-8")
    assert card == package.model_card
    assert entry.sha256 == sha256_path(opened / MODEL_CARD_FILE)
    # The card's digest sits in the signed header: changing it breaks the signature.
    data = package.path.read_bytes()
    assert data.count(entry.sha256.encode()) == 1
    forged = "0" * 64 if entry.sha256 != "0" * 64 else "1" * 64
    package.path.write_bytes(data.replace(entry.sha256.encode(), forged.encode()))
    with pytest.raises(PackageSignatureError):
        verify_package(package.path, TrustStore([keys.signer.public_key()]))


def test_the_model_card_states_every_gate_metric_of_its_decision(
    tmp_path: Path, keys: ReleaseKeys
) -> None:
    decision = decision_for(report(global_loss=2.0, pruned_loss=2.5))  # pruned excluded
    assert decision.passed
    assert decision.excluded == (PRUNED_MODEL,)
    package = build_with_card(tmp_path, keys, decision, round_facts())
    rows = table_rows(package.model_card)
    assert len(decision.criteria) > 5
    for criterion in decision.criteria:
        measured, threshold, status, blocking = rows[criterion.name]
        assert status == criterion.status
        assert blocking == ("yes" if criterion.blocking else "no")
        if isinstance(criterion.observed, bool):
            assert measured == ("yes" if criterion.observed else "no")
        elif criterion.name in BOUND_CRITERIA:  # a bound the measurement stayed within
            assert measured.startswith("≤ ")
            assert float(measured[2:]) == pytest.approx(criterion.observed, rel=1e-5)
        elif criterion.observed is not None:
            assert float(measured) == pytest.approx(criterion.observed, rel=1e-5)
        if criterion.threshold is not None:
            assert float(threshold) == pytest.approx(criterion.threshold, rel=1e-5)
    assert decision.policy_digest in package.model_card
    assert f"v{decision.policy_version}" in package.model_card
    assert decision.digest() in package.model_card
    excluded = [c for c in decision.criteria if c.status == "excluded"]
    assert excluded
    assert all(c.reason in package.model_card for c in excluded)
    header = inspect_package(package.path).header
    assert header.release.base_model is not None
    assert header.release.base_model.digest in package.model_card
    assert rows["round"] == [header.release.round_id]


def test_two_builds_of_a_release_have_byte_identical_plaintext_files(
    tmp_path: Path, keys: ReleaseKeys
) -> None:
    """Two builds of the same release: the MOAI self-check measures a different CKKS error
    each time (fresh encryption) and the packages are built a day apart. Every file in the
    signed manifest, the gate decision and the model card included, has the same bytes;
    only the header's validity window, the encryption and the signature differ (#15 item 4)."""
    builds = []
    for name, measured_error, built_at in (
        ("a", 1.27e-6, 1_795_000_000),
        ("b", 8.4e-7, 1_795_090_000),
    ):
        decision = decision_for(
            report(), moai_self_check=MoaiSelfCheck.from_measurement(measured_error, 1e-4)
        )
        candidate = dataclasses.replace(
            candidate_for(tmp_path / name, decision), round_facts=round_facts()
        )
        builds.append(
            build_release_package(
                candidate,
                tmp_path / name / "package",
                signer=keys.signer,
                recipients=[keys.node.public_key()],
                registry=LocalRegistry(tmp_path / name / "registry"),
                channel=CHANNEL,
                validity_days=30,
                now=built_at,
            )
        )
    first, second = builds
    assert first.model_card == second.model_card
    assert {(f.path, f.size, f.sha256) for f in first.manifest} == {
        (f.path, f.size, f.sha256) for f in second.manifest
    }
    assert {f.path for f in first.manifest} >= {MODEL_CARD_FILE, DECISION_FILE}
    assert table_rows(first.model_card)["validity"][0].startswith("30 days")
    assert table_rows(first.model_card)["moai_self_check"][0] == "≤ 0.0001"
    headers = [inspect_package(build.path).header.release for build in builds]
    assert headers[0].created_at != headers[1].created_at
    assert first.path.read_bytes() != second.path.read_bytes()


def test_the_model_card_states_the_training_settings_of_the_signed_spec() -> None:
    facts = round_facts()
    assert facts.training is not None
    training = facts.training
    assert (training.lora_ranks, training.lora_targets) == ((4,), ("q_proj", "v_proj"))
    assert training.lora_aggregation == "frozen_a"
    assert training.trained_parameters == 2 * 16 * 4  # only the B factors are sent
    assert (training.server_optimizer, training.server_learning_rate) == ("fedadam", 0.5)
    assert training.local_steps == (5, 7)


def test_the_model_card_states_the_dp_rule_and_the_epsilon_spent(
    tmp_path: Path, keys: ReleaseKeys, passed: GateDecision
) -> None:
    rule = DPRule(noise_multiplier=1.1, delta=1e-5, epsilon_budget=10.0)
    without = table_rows(build_with_card(tmp_path / "a", keys, passed, round_facts()).model_card)
    assert "DP noise multiplier, δ" not in without
    assert without["DP ε"] == ["none (no differential privacy)"]
    card = build_with_card(tmp_path / "b", keys, passed, round_facts(dp=rule, epsilon=0.75))
    rows = table_rows(card.model_card)
    noise, delta = (float(v) for v in rows["DP noise multiplier, δ"][0].split(", "))
    assert (noise, delta) == (rule.noise_multiplier, rule.delta)
    spent, total = (float(v) for v in rows["DP ε (this round, total)"][0].split(", "))
    assert (spent, total) == (0.75, 2.25)
    assert "No differential privacy" not in card.model_card


@pytest.mark.parametrize("setting", [None, False, True])
def test_site_ids_appear_on_the_card_only_when_the_policy_allows(
    tmp_path: Path, keys: ReleaseKeys, setting: bool | None
) -> None:
    policy_file = tmp_path / "policy.yaml"
    policy = DEFAULT_POLICY_FILE.read_text(encoding="utf-8")
    if setting is not None:
        policy += f"\ndisclose_site_ids: {str(setting).lower()}\n"
    policy_file.write_text(policy, encoding="utf-8")
    decision = decide_release(
        gate_evidence(
            report(),
            onnx_max_abs_diff=1e-5,
            sparsity=0.5,
            moai_self_check=MoaiSelfCheck.from_measurement(1e-5, 1e-4),
            checks=REQUIRED_CHECKS,
        ),
        policy_file,
    )
    assert decision.passed, decision.failures
    assert decision.policy.disclose_site_ids is setting
    if setting is None:  # absent: left out, so the policy keeps its earlier digest
        assert b"disclose_site_ids" not in decision.policy.canonical_json()
    package = build_with_card(tmp_path, keys, decision, round_facts())
    card = package.model_card
    assert table_rows(card)["contributing sites"][0].startswith(str(len(SITES)))
    for site in SITES:
        assert (site in card) is (setting is True)
