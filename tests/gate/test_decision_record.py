"""Recorded gate decisions stay valid: every criterion of a fixed set of cases is pinned.

``GateDecision.from_json`` re-evaluates a recorded decision and refuses it when any
verdict, status, observed value, threshold or reason differs from a fresh evaluation.
A change to the gate's wording or arithmetic therefore invalidates every decision
already recorded in a package, so it must be deliberate: this test compares the
criteria of each case below with ``decision_record.json`` and names the first that
changed. After an intended change, bump the decision format (``DECISION_FORMAT``) and
regenerate the record with ``.venv/bin/python -m tests.gate.test_decision_record``.

Written from the mutation run on tensorguard/gate/decision.py (docs/SECURITY.md §4):
the other gate tests checked verdicts and a few fragments, and let through a criterion
that recorded the wrong threshold, a boundary compared with ``<`` instead of ``<=``, a
relative rule computed as absolute, and a missing-evidence reason naming no field.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tensorguard.gate import GateDecision, GateEvidence, evaluate_gate, parse_policy
from tests.gate.test_gate import policy_document

RECORD = Path(__file__).with_name("decision_record.json")
PREVIOUS = {"kind": "previous_release", "version": 4, "eval_loss": 2.05}
RELATIVE_REGRESSION = {"mode": "relative", "value": 0.02}
ABSOLUTE_IMPROVEMENT = {"mode": "absolute", "value": 0.1}
ABSOLUTE_PRUNED = {"mode": "absolute", "value": 0.05}


def _evidence(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "eval_loss_global": 2.0,
        "eval_loss_base": 2.5,
        "eval_loss_pruned": 2.08,
        "last_release": PREVIOUS,
        "onnx_max_abs_diff": 2e-4,
        "sparsity": 0.5,
        "moai_self_check": {"error_bound": 1e-4, "within_bound": True},
        "checks": {"quorum_met": True, "signature_verifies": True},
    }
    document.update(overrides)
    return {key: value for key, value in document.items() if value is not None}


# name: (policy overrides, evidence overrides); None in the evidence removes the field.
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "all-pass": ({}, {}),
    "everything-missing": ({}, {key: None for key in _evidence()}),
    "nothing-enforced-but-checks": (
        {
            "max_eval_loss": None,
            "min_improvement_over_base": None,
            "max_regression_vs_last_release": None,
            "max_onnx_abs_diff": None,
            "min_sparsity": None,
            "max_pruned_loss_increase": None,
            "max_moai_self_check_error": None,
        },
        {},
    ),
    "bounds-exactly-met": (
        {"max_eval_loss": 2.0, "max_onnx_abs_diff": 2e-4, "max_moai_self_check_error": 1e-4},
        {},
    ),
    "bounds-just-missed": (
        {"max_eval_loss": 1.999, "max_onnx_abs_diff": 1.9e-4, "min_sparsity": 0.51},
        {},
    ),
    "improvement-absolute": ({"min_improvement_over_base": ABSOLUTE_IMPROVEMENT}, {}),
    "improvement-absolute-short": (
        {"min_improvement_over_base": ABSOLUTE_IMPROVEMENT},
        {"eval_loss_base": 2.05},
    ),
    "improvement-over-a-zero-base": ({}, {"eval_loss_base": 0.0}),
    "improvement-absolute-zero-base": (
        {"min_improvement_over_base": ABSOLUTE_IMPROVEMENT},
        {"eval_loss_base": 0.0, "eval_loss_global": 0.0, "eval_loss_pruned": 0.0},
    ),
    "improvement-base-missing": ({}, {"eval_loss_base": None}),
    "zero-global-loss": ({}, {"eval_loss_global": 0.0, "eval_loss_pruned": 0.0}),
    "first-release": ({}, {"last_release": {"kind": "first_release"}}),
    "regression-relative": ({"max_regression_vs_last_release": RELATIVE_REGRESSION}, {}),
    "regression-relative-too-much": (
        {"max_regression_vs_last_release": RELATIVE_REGRESSION},
        {"eval_loss_global": 2.2, "eval_loss_base": 2.6, "eval_loss_pruned": 2.2},
    ),
    "regression-relative-zero-last": (
        {"max_regression_vs_last_release": RELATIVE_REGRESSION},
        {"last_release": {"kind": "previous_release", "version": 2, "eval_loss": 0.0}},
    ),
    "regression-absolute-zero-last": (
        {},
        {"last_release": {"kind": "previous_release", "version": 2, "eval_loss": 0.0}},
    ),
    "regression-global-missing": ({}, {"eval_loss_global": None}),
    "pruned-over-budget-fails": ({}, {"eval_loss_pruned": 2.2}),
    "pruned-over-budget-excluded": (
        {"pruned_over_budget": "exclude"},
        {"eval_loss_pruned": 2.2},
    ),
    "pruned-within-budget-exclude-policy": ({"pruned_over_budget": "exclude"}, {}),
    "pruned-absolute": ({"max_pruned_loss_increase": ABSOLUTE_PRUNED}, {}),
    "pruned-absolute-over": (
        {"max_pruned_loss_increase": ABSOLUTE_PRUNED, "pruned_over_budget": "exclude"},
        {"eval_loss_pruned": 2.06},
    ),
    "pruned-missing": ({}, {"eval_loss_pruned": None}),
    "moai-bound-above-maximum": (
        {},
        {"moai_self_check": {"error_bound": 2e-3, "within_bound": True}},
    ),
    "moai-self-check-exceeded": (
        {},
        {"moai_self_check": {"error_bound": 1e-4, "within_bound": False}},
    ),
    "checks-failed-missing-and-extra": (
        {},
        {"checks": {"quorum_met": False, "extra_check": False, "another": True}},
    ),
}


def decide(case: str) -> GateDecision:
    policy_overrides, evidence_overrides = CASES[case]
    policy = parse_policy(policy_document(**policy_overrides))
    return evaluate_gate(policy, GateEvidence.parse(_evidence(**evidence_overrides)))


def summary(decision: GateDecision) -> dict[str, Any]:
    """What a case pins: the verdict, the exclusions and every criterion as recorded."""
    return {
        "passed": decision.passed,
        "excluded": list(decision.excluded),
        "criteria": [c.model_dump(mode="json") for c in decision.criteria],
    }


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_case_decides_as_recorded(case: str) -> None:
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))
    decision = decide(case)
    assert summary(decision) == recorded[case]
    assert GateDecision.from_json(decision.canonical_json()) == decision


def test_the_record_covers_exactly_the_cases() -> None:
    assert sorted(json.loads(RECORD.read_text(encoding="utf-8"))) == sorted(CASES)


if __name__ == "__main__":  # regenerate after a deliberate change (see the docstring)
    record = {case: summary(decide(case)) for case in sorted(CASES)}
    RECORD.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    sys.stdout.write(f"wrote {len(record)} cases to {RECORD}\n")
