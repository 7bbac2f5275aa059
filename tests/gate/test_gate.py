"""Release gate: policy validation, fail-closed evaluation, canonical decisions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tensorguard.gate import (
    DEFAULT_POLICY_FILE,
    FirstRelease,
    GateDecision,
    GateDecisionError,
    GateEvidence,
    GateEvidenceError,
    GatePolicy,
    GatePolicyError,
    MoaiSelfCheck,
    PreviousRelease,
    evaluate_gate,
    load_policy,
    parse_policy,
)

REPO_POLICY = DEFAULT_POLICY_FILE


def policy_document(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "policy_version": 3,
        "max_eval_loss": 4.0,
        "min_improvement_over_base": {"mode": "relative", "value": 0.05},
        "max_regression_vs_last_release": {"mode": "absolute", "value": 0.1},
        "max_onnx_abs_diff": 1e-3,
        "min_sparsity": 0.5,
        "max_pruned_loss_increase": {"mode": "relative", "value": 0.05},
        "pruned_over_budget": "fail",
        "max_moai_self_check_error": 1e-3,
        "required_checks": ["quorum_met", "signature_verifies"],
    }
    document.update(overrides)
    return document


def good_evidence(**overrides: Any) -> GateEvidence:
    document: dict[str, Any] = {
        "eval_loss_global": 2.0,
        "eval_loss_base": 2.5,
        "eval_loss_pruned": 2.08,
        "last_release": {"kind": "previous_release", "version": 4, "eval_loss": 2.05},
        "onnx_max_abs_diff": 2e-4,
        "sparsity": 0.5,
        "moai_self_check": {"error_bound": 1e-4, "within_bound": True},
        "checks": {"quorum_met": True, "signature_verifies": True},
    }
    document.update(overrides)
    return GateEvidence.parse(document)


@pytest.fixture
def policy() -> GatePolicy:
    return parse_policy(policy_document())


def criterion(decision: GateDecision, name: str) -> Any:
    matches = [c for c in decision.criteria if c.name == name]
    assert len(matches) == 1, name
    return matches[0]


def test_repository_policy_loads_and_has_a_stable_digest() -> None:
    policy = load_policy(REPO_POLICY)
    assert policy.policy_version >= 1
    assert policy.digest() == load_policy(REPO_POLICY).digest()
    assert len(policy.digest()) == 64


def test_policy_evidence_and_decision_hash_their_canonical_json(policy: GatePolicy) -> None:
    evidence = good_evidence()
    decision = evaluate_gate(policy, evidence)
    for document in (policy, evidence, decision):
        assert document.digest() == hashlib.sha256(document.canonical_json()).hexdigest()
        assert json.loads(document.canonical_json()) == document.model_dump(mode="json")
    assert good_evidence(eval_loss_global=0.5).digest() != evidence.digest()


def test_all_criteria_met_passes_with_a_reason_per_criterion(policy: GatePolicy) -> None:
    decision = evaluate_gate(policy, good_evidence())
    assert decision.passed
    assert decision.failures == []
    names = [c.name for c in decision.criteria]
    assert names == [
        "eval_loss",
        "improvement_over_base",
        "regression_vs_last_release",
        "pruned_loss_increase",
        "sparsity",
        "onnx_parity",
        "moai_self_check",
        "check:quorum_met",
        "check:signature_verifies",
    ]
    assert all(c.status == "passed" for c in decision.criteria)
    assert len(decision.reasons) == len(names)
    improvement = criterion(decision, "improvement_over_base")
    assert improvement.observed == pytest.approx((2.5 - 2.0) / 2.5)
    regression = criterion(decision, "regression_vs_last_release")
    assert regression.observed == pytest.approx(2.0 - 2.05)
    assert "release 4" in regression.reason
    pruned = criterion(decision, "pruned_loss_increase")
    assert pruned.observed == pytest.approx((2.08 - 2.0) / 2.0)
    assert pruned.threshold == pytest.approx(0.05)
    assert decision.excluded == ()


@pytest.mark.parametrize(
    ("overrides", "failed", "fragment"),
    [
        (
            {
                "eval_loss_global": 4.5,
                "eval_loss_base": 5.0,
                "last_release": {"kind": "previous_release", "version": 4, "eval_loss": 4.45},
            },
            "eval_loss",
            "exceeds the maximum 4",
        ),
        ({"eval_loss_base": 2.02}, "improvement_over_base", "is below the required minimum 0.05"),
        (
            {"last_release": {"kind": "previous_release", "version": 7, "eval_loss": 1.8}},
            "regression_vs_last_release",
            "absolute regression 0.2 exceeds the maximum 0.1",
        ),
        ({"onnx_max_abs_diff": 0.01}, "onnx_parity", "0.01 exceeds the maximum 0.001"),
        ({"sparsity": 0.25}, "sparsity", "0.25 is below the required minimum 0.5"),
        (
            {"eval_loss_pruned": 2.2},
            "pruned_loss_increase",
            "relative increase 0.1 exceeds the maximum 0.05",
        ),
        (
            {"moai_self_check": {"error_bound": 0.02, "within_bound": True}},
            "moai_self_check",
            "bound 0.02 exceeds the maximum 0.001",
        ),
        (
            {"moai_self_check": {"error_bound": 1e-4, "within_bound": False}},
            "moai_self_check",
            "error above its bound 0.0001, so the error is not shown to be within the maximum",
        ),
        (
            {"checks": {"quorum_met": False, "signature_verifies": True}},
            "check:quorum_met",
            "required check failed",
        ),
    ],
)
def test_each_threshold_fails_the_gate_with_its_reason(
    policy: GatePolicy, overrides: dict[str, Any], failed: str, fragment: str
) -> None:
    decision = evaluate_gate(policy, good_evidence(**overrides))
    assert not decision.passed
    assert [c.name for c in decision.criteria if c.status == "failed"] == [failed]
    (reason,) = decision.failures
    assert reason.startswith(f"{failed}: FAILED: ")
    assert fragment in reason


@pytest.mark.parametrize(
    ("missing", "failed_names"),
    [
        (
            "eval_loss_global",
            {
                "eval_loss",
                "improvement_over_base",
                "regression_vs_last_release",
                "pruned_loss_increase",
            },
        ),
        ("eval_loss_base", {"improvement_over_base"}),
        ("last_release", {"regression_vs_last_release"}),
        ("onnx_max_abs_diff", {"onnx_parity"}),
        ("sparsity", {"sparsity"}),
        ("eval_loss_pruned", {"pruned_loss_increase"}),
        ("moai_self_check", {"moai_self_check"}),
        ("checks", {"check:quorum_met", "check:signature_verifies"}),
    ],
)
def test_missing_evidence_fails_closed(
    policy: GatePolicy, missing: str, failed_names: set[str]
) -> None:
    document = good_evidence().model_dump()
    del document[missing]
    decision = evaluate_gate(policy, GateEvidence.parse(document))
    assert not decision.passed
    failed = {c.name for c in decision.criteria if c.status == "failed"}
    assert failed == failed_names
    assert all("missing" in reason and "fails closed" in reason for reason in decision.failures)


def test_empty_evidence_fails_every_enforced_criterion(policy: GatePolicy) -> None:
    decision = evaluate_gate(policy, GateEvidence())
    assert not decision.passed
    assert all(c.status == "failed" for c in decision.criteria)


def test_first_release_is_explicit_and_passes_regression(policy: GatePolicy) -> None:
    decision = evaluate_gate(policy, good_evidence(last_release={"kind": "first_release"}))
    assert decision.passed
    assert isinstance(decision.evidence.last_release, FirstRelease)
    assert "first release" in criterion(decision, "regression_vs_last_release").reason


def test_relative_and_absolute_modes_compute_different_quantities() -> None:
    absolute = parse_policy(
        policy_document(min_improvement_over_base={"mode": "absolute", "value": 0.4})
    )
    relative = parse_policy(
        policy_document(min_improvement_over_base={"mode": "relative", "value": 0.4})
    )
    evidence = good_evidence()  # improvement 0.5 absolute, 0.2 relative
    assert evaluate_gate(absolute, evidence).passed
    assert not evaluate_gate(relative, evidence).passed


def test_relative_improvement_over_zero_base_fails() -> None:
    policy = parse_policy(policy_document(max_eval_loss=None))
    decision = evaluate_gate(policy, good_evidence(eval_loss_global=0.0, eval_loss_base=0.0))
    assert not decision.passed
    assert "undefined" in criterion(decision, "improvement_over_base").reason


def test_null_threshold_is_recorded_as_not_enforced() -> None:
    policy = parse_policy(policy_document(max_onnx_abs_diff=None))
    decision = evaluate_gate(policy, good_evidence(onnx_max_abs_diff=None))
    assert decision.passed
    onnx = criterion(decision, "onnx_parity")
    assert (onnx.status, onnx.blocking) == ("not_enforced", False)


IMPOSSIBLE_PRUNING_BUDGET = {"mode": "relative", "value": 0.0}


def test_impossible_pruning_budget_under_fail_fails_the_gate() -> None:
    policy = parse_policy(
        policy_document(
            max_pruned_loss_increase=IMPOSSIBLE_PRUNING_BUDGET, pruned_over_budget="fail"
        )
    )
    decision = evaluate_gate(policy, good_evidence())
    assert not decision.passed
    assert decision.excluded == ()
    (failure,) = decision.failures
    assert failure.startswith("pruned_loss_increase: FAILED: pruned eval loss 2.08")
    assert "exceeds the maximum 0" in failure


def test_impossible_pruning_budget_under_exclude_ships_without_the_pruned_model() -> None:
    policy = parse_policy(
        policy_document(
            max_pruned_loss_increase=IMPOSSIBLE_PRUNING_BUDGET, pruned_over_budget="exclude"
        )
    )
    decision = evaluate_gate(policy, good_evidence())
    assert decision.passed
    assert decision.failures == []
    assert decision.excluded == ("pruned_model",)
    pruned = criterion(decision, "pruned_loss_increase")
    assert (pruned.status, pruned.blocking, pruned.excludes) == ("excluded", False, "pruned_model")
    assert pruned.observed == pytest.approx(0.04)
    assert "left out of the package" in pruned.reason
    assert GateDecision.from_json(decision.canonical_json()).excluded == ("pruned_model",)


def test_a_pruned_model_within_budget_is_never_excluded() -> None:
    policy = parse_policy(policy_document(pruned_over_budget="exclude"))
    decision = evaluate_gate(policy, good_evidence())
    assert decision.passed
    assert decision.excluded == ()
    assert criterion(decision, "pruned_loss_increase").status == "passed"


def test_missing_pruned_loss_fails_closed_even_under_exclude() -> None:
    policy = parse_policy(policy_document(pruned_over_budget="exclude"))
    decision = evaluate_gate(policy, good_evidence(eval_loss_pruned=None))
    assert not decision.passed
    assert decision.excluded == ()
    assert criterion(decision, "pruned_loss_increase").status == "failed"


def test_absolute_pruning_budget_is_in_loss_units() -> None:
    policy = parse_policy(
        policy_document(max_pruned_loss_increase={"mode": "absolute", "value": 0.1})
    )
    decision = evaluate_gate(policy, good_evidence(eval_loss_pruned=2.09))
    assert criterion(decision, "pruned_loss_increase").observed == pytest.approx(0.09)
    assert decision.passed


def test_shipped_policy_gates_every_deployable() -> None:
    policy = load_policy(REPO_POLICY)
    assert policy.max_eval_loss is not None
    assert policy.min_improvement_over_base is not None
    assert policy.max_pruned_loss_increase is not None
    assert policy.min_sparsity is not None
    assert policy.max_onnx_abs_diff is not None
    assert policy.max_moai_self_check_error is not None
    assert policy.pruned_over_budget == "exclude"


def test_unrequired_failed_check_is_recorded_but_not_blocking(policy: GatePolicy) -> None:
    checks = {"quorum_met": True, "signature_verifies": True, "tensorrt_built": False}
    decision = evaluate_gate(policy, good_evidence(checks=checks))
    assert decision.passed
    extra = criterion(decision, "check:tensorrt_built")
    assert (extra.status, extra.blocking) == ("failed", False)


def test_impossible_thresholds_fail() -> None:
    policy = parse_policy(
        policy_document(
            max_eval_loss=0.0, min_improvement_over_base={"mode": "relative", "value": 1.0}
        )
    )
    decision = evaluate_gate(policy, good_evidence())
    assert not decision.passed
    assert {c.name for c in decision.criteria if c.status == "failed"} == {
        "eval_loss",
        "improvement_over_base",
    }


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"max_eval_loss_typo": 3.0}, "max_eval_loss_typo"),
        ({"min_sparsity": 1.5}, "min_sparsity"),
        ({"max_eval_loss": float("nan")}, "max_eval_loss"),
        ({"policy_version": "1"}, "policy_version"),
        ({"policy_version": 0}, "policy_version"),
        ({"min_improvement_over_base": {"mode": "percent", "value": 1}}, "mode"),
        ({"max_regression_vs_last_release": {"mode": "absolute", "value": -1}}, "value"),
        ({"required_checks": ["a", "a"]}, "more than once"),
        ({"required_checks": ["has space"]}, "check name"),
        ({"pruned_over_budget": "ignore"}, "pruned_over_budget"),
        ({"max_pruned_loss_increase": {"mode": "relative", "value": -0.1}}, "value"),
    ],
)
def test_invalid_policies_are_rejected(overrides: dict[str, Any], fragment: str) -> None:
    with pytest.raises(GatePolicyError, match="not a valid gate policy") as raised:
        parse_policy(policy_document(**overrides))
    assert fragment in str(raised.value)


def test_a_missing_threshold_key_is_rejected_not_defaulted() -> None:
    document = policy_document()
    del document["min_sparsity"]
    with pytest.raises(GatePolicyError, match="min_sparsity"):
        parse_policy(document)


def test_a_policy_that_enforces_nothing_is_rejected() -> None:
    document = policy_document(
        max_eval_loss=None,
        min_improvement_over_base=None,
        max_regression_vs_last_release=None,
        max_onnx_abs_diff=None,
        min_sparsity=None,
        max_pruned_loss_increase=None,
        max_moai_self_check_error=None,
        required_checks=[],
    )
    with pytest.raises(GatePolicyError, match="enforces nothing"):
        parse_policy(document)


def test_yaml_unknown_and_duplicate_keys_are_rejected(tmp_path: Path) -> None:
    text = REPO_POLICY.read_text(encoding="utf-8")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(text + "\nmax_latency_ms: 20\n", encoding="utf-8")
    with pytest.raises(GatePolicyError, match="max_latency_ms"):
        load_policy(unknown)
    duplicate = tmp_path / "duplicate.yaml"
    duplicate.write_text(text + "\nmax_eval_loss: 100.0\n", encoding="utf-8")
    with pytest.raises(GatePolicyError, match="duplicate key 'max_eval_loss'"):
        load_policy(duplicate)
    with pytest.raises(GatePolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n", encoding="utf-8")
    with pytest.raises(GatePolicyError, match="must be a mapping"):
        load_policy(not_mapping)


def test_policy_digest_ignores_formatting_but_not_values(tmp_path: Path) -> None:
    reordered = tmp_path / "reordered.yaml"
    document = policy_document()
    reordered.write_text(
        "# comment\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in reversed(document.items())),
        encoding="utf-8",
    )
    assert load_policy(reordered).digest() == parse_policy(document).digest()
    as_int = parse_policy(policy_document(max_eval_loss=4))
    assert as_int.digest() == parse_policy(document).digest()
    assert parse_policy(policy_document(max_eval_loss=4.01)).digest() != as_int.digest()


@pytest.mark.parametrize(
    "document",
    [
        {"eval_loss_global": float("inf")},
        {"eval_loss_global": -1.0},
        {"sparsity": 1.2},
        {"last_release": {"kind": "previous_release", "eval_loss": 1.0}},
        {"checks": {"bad name": True}},
        {"unexpected": 1},
        {"moai_self_check": {"error_bound": 0.0, "within_bound": True}},
        {"moai_self_check": {"error_bound": 1e-4}},
        {"moai_self_check_max_abs_error": 1e-6},
    ],
)
def test_malformed_evidence_is_rejected(document: dict[str, Any]) -> None:
    with pytest.raises(GateEvidenceError, match="malformed"):
        GateEvidence.parse(document)


def test_decision_is_deterministic_and_round_trips(policy: GatePolicy) -> None:
    first = evaluate_gate(policy, good_evidence())
    second = evaluate_gate(parse_policy(policy_document()), good_evidence())
    assert first.canonical_json() == second.canonical_json()
    assert first.digest() == second.digest()
    assert first.policy_digest == policy.digest()
    assert first.evidence_digest == good_evidence().digest()
    parsed = GateDecision.from_json(first.canonical_json())
    assert parsed == first
    assert parsed.digest() == first.digest()
    changed = evaluate_gate(policy, good_evidence(sparsity=0.6))
    assert changed.evidence_digest != first.evidence_digest
    assert changed.digest() != first.digest()


def test_canonical_json_is_sorted_and_compact(policy: GatePolicy) -> None:
    data = evaluate_gate(policy, good_evidence()).canonical_json()
    document = json.loads(data)
    assert list(document) == sorted(document)
    assert b" " not in data.replace(b"ONNX-vs-torch", b"").split(b'"reason"')[0]
    assert document["format"] == "tensorguard.gate-decision/v3"


def test_an_edited_decision_is_detected(policy: GatePolicy) -> None:
    failing = evaluate_gate(policy, good_evidence(sparsity=0.1))
    assert not failing.passed
    forged = json.loads(failing.canonical_json())
    forged["passed"] = True
    with pytest.raises(GateDecisionError, match="inconsistent"):
        GateDecision.from_json(json.dumps(forged))
    forged = json.loads(failing.canonical_json())
    forged["evidence"]["sparsity"] = 0.9
    with pytest.raises(GateDecisionError, match="inconsistent"):
        GateDecision.from_json(json.dumps(forged))
    with pytest.raises(GateDecisionError, match="does not parse"):
        GateDecision.from_json(b"{}")


def test_previous_release_model_is_typed() -> None:
    evidence = good_evidence()
    assert isinstance(evidence.last_release, PreviousRelease)
    assert evidence.last_release.version == 4


def test_the_moai_self_check_is_recorded_as_its_bound_and_outcome() -> None:
    within = MoaiSelfCheck.from_measurement(3e-6, 1e-4)
    assert within == MoaiSelfCheck(error_bound=1e-4, within_bound=True)
    assert MoaiSelfCheck.from_measurement(1e-4, 1e-4).within_bound  # at the bound: within
    assert not MoaiSelfCheck.from_measurement(1.0001e-4, 1e-4).within_bound
    for error in (float("nan"), float("inf"), -1e-9):
        with pytest.raises(GateEvidenceError, match="not a finite non-negative number"):
            MoaiSelfCheck.from_measurement(error, 1e-4)
    for bound in (0.0, -1e-4, float("inf")):
        with pytest.raises(GateEvidenceError, match="self_check_tolerance"):
            MoaiSelfCheck.from_measurement(1e-6, bound)


def test_the_moai_criterion_judges_the_bound_not_the_measured_error(policy: GatePolicy) -> None:
    passed = criterion(evaluate_gate(policy, good_evidence()), "moai_self_check")
    assert (passed.status, passed.observed, passed.threshold) == ("passed", 1e-4, 1e-3)
    assert passed.reason == (
        "moai_self_check: PASSED: CKKS-vs-plaintext error of the MOAI self-check is at most "
        "its bound 0.0001, within the maximum 0.001"
    )
    at_threshold = good_evidence(moai_self_check={"error_bound": 1e-3, "within_bound": True})
    assert evaluate_gate(policy, at_threshold).passed
    loose = evaluate_gate(
        policy, good_evidence(moai_self_check={"error_bound": 2e-3, "within_bound": True})
    )
    assert "set moai_export's self_check_tolerance to at most 0.001" in loose.failures[0]
    exceeded = criterion(
        evaluate_gate(
            policy, good_evidence(moai_self_check={"error_bound": 1e-4, "within_bound": False})
        ),
        "moai_self_check",
    )
    assert (exceeded.status, exceeded.observed, exceeded.blocking) == ("failed", None, True)
    off = evaluate_gate(
        parse_policy(policy_document(max_moai_self_check_error=None)), GateEvidence()
    )
    assert criterion(off, "moai_self_check").status == "not_enforced"


def test_the_decision_is_the_same_whatever_error_the_self_check_measured(
    policy: GatePolicy,
) -> None:
    """Two builds measure different CKKS errors (fresh encryptions); the decision, which
    ships in the package, must not tell them apart (#15 item 4)."""
    decisions = [
        evaluate_gate(
            policy, good_evidence(moai_self_check=MoaiSelfCheck.from_measurement(error, 1e-4))
        ).canonical_json()
        for error in (1.27e-6, 8.4e-7)
    ]
    assert decisions[0] == decisions[1]
    assert b"1.27e-06" not in decisions[0]
