"""What an operator reads when a gate policy or evidence is refused, word for word.

These messages end up in a failed run's log and in the CLI's output; each names the
file or field and says how to fix it. The tests pin them in full (#18 item 6: the
mutation run on gate/evidence.py and gate/policy.py left every hint's wording and the
refusal of an unreadable policy file untested).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tensorguard.gate import (
    DEFAULT_POLICY_FILE,
    GateEvidence,
    GateEvidenceError,
    GatePolicyError,
    MoaiSelfCheck,
    load_policy,
    parse_policy,
)

POLICY_HINT = (
    "Fix the file; every threshold key is required (write null to disable one) and "
    "unknown keys are rejected"
)


def test_a_self_check_that_measured_no_error_is_within_its_bound() -> None:
    # 0.0 is a valid measurement (plaintext and CKKS agreed exactly), not a refusal.
    assert MoaiSelfCheck.from_measurement(0.0, 1e-4) == MoaiSelfCheck(
        error_bound=1e-4, within_bound=True
    )


def test_a_malformed_self_check_bound_names_the_setting_to_fix() -> None:
    with pytest.raises(GateEvidenceError) as raised:
        MoaiSelfCheck.from_measurement(1e-6, 0.0)
    assert str(raised.value) == (
        "the MOAI self-check bound is malformed: error_bound: Input should be greater "
        "than 0. Set moai_export's self_check_tolerance to a positive finite number"
    )
    with pytest.raises(GateEvidenceError) as raised:
        MoaiSelfCheck.from_measurement(-1e-9, 1e-4)
    assert str(raised.value) == (
        "the MOAI self-check error -1e-09 is not a finite non-negative number; "
        "re-materialise moai_export"
    )


def test_malformed_evidence_names_the_field_and_the_rule() -> None:
    with pytest.raises(GateEvidenceError) as raised:
        GateEvidence.parse({"sparsity": 1.5})
    assert str(raised.value) == (
        "gate evidence is malformed: sparsity: Input should be less than or equal to 1. "
        "Losses and differences must be finite and non-negative, sparsity in [0, 1]"
    )


@pytest.mark.parametrize(("document", "kind"), [("max_eval_loss: 1", "str"), (None, "NoneType")])
def test_a_policy_that_is_not_a_mapping_says_what_it_got(document: object, kind: str) -> None:
    with pytest.raises(GatePolicyError) as raised:
        parse_policy(document)
    assert str(raised.value) == f"policy: a gate policy must be a mapping of settings, got {kind}"


def test_an_invalid_policy_lists_every_problem_and_the_fix() -> None:
    with pytest.raises(GatePolicyError) as raised:
        parse_policy({"policy_version": 1, "max_eval_loss": None}, source="gate.yaml")
    missing = (
        "min_improvement_over_base",
        "max_regression_vs_last_release",
        "max_onnx_abs_diff",
        "min_sparsity",
        "max_pruned_loss_increase",
        "pruned_over_budget",
        "max_moai_self_check_error",
        "required_checks",
    )
    assert str(raised.value) == (
        "gate.yaml is not a valid gate policy: "
        + "; ".join(f"{name}: Field required" for name in missing)
        + f". {POLICY_HINT}"
    )


def test_load_policy_names_the_file_in_each_refusal(tmp_path: Path) -> None:
    absent = tmp_path / "absent.yaml"
    with pytest.raises(GatePolicyError) as raised:
        load_policy(absent)
    assert str(raised.value) == (
        f"cannot read gate policy {absent}: No such file or directory; check the configured "
        "policy path"
    )

    broken = tmp_path / "broken.yaml"
    broken.write_text("max_eval_loss: [1\n", encoding="utf-8")
    with pytest.raises(GatePolicyError) as raised:
        load_policy(broken)
    message = str(raised.value)
    assert message.startswith(f"gate policy {broken} is not valid YAML: ")
    assert message.endswith("; fix the file (each key may appear once)")

    invalid = tmp_path / "invalid.yaml"
    document = parse_policy_document()
    del document["min_sparsity"]
    invalid.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(GatePolicyError) as raised:
        load_policy(invalid)
    assert str(raised.value) == (
        f"{invalid} is not a valid gate policy: min_sparsity: Field required. {POLICY_HINT}"
    )


def test_a_policy_file_that_is_not_utf8_is_refused_cleanly(tmp_path: Path) -> None:
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(
        DEFAULT_POLICY_FILE.read_bytes() + 'description: "mod\u00e8le"\n'.encode("latin-1")
    )
    with pytest.raises(GatePolicyError) as raised:
        load_policy(latin1)
    offset = len(DEFAULT_POLICY_FILE.read_bytes()) + len('description: "mod')
    assert str(raised.value) == (
        f"gate policy {latin1} is not UTF-8 text (byte {offset}: invalid continuation "
        "byte); save it as UTF-8"
    )


def parse_policy_document() -> dict[str, object]:
    """The shipped policy as a plain document (JSON is valid YAML)."""
    document: dict[str, object] = json.loads(load_policy(DEFAULT_POLICY_FILE).model_dump_json())
    return document


THRESHOLDS = {
    "max_eval_loss": 4.0,
    "min_improvement_over_base": {"mode": "relative", "value": 0.05},
    "max_regression_vs_last_release": {"mode": "absolute", "value": 0.1},
    "max_onnx_abs_diff": 1e-3,
    "min_sparsity": 0.5,
    "max_pruned_loss_increase": {"mode": "relative", "value": 0.05},
    "max_moai_self_check_error": 1e-3,
}


@pytest.mark.parametrize("kept", sorted(THRESHOLDS))
def test_one_threshold_alone_is_a_policy_that_enforces_something(kept: str) -> None:
    document: dict[str, object] = {name: None for name in THRESHOLDS}
    document.update(
        policy_version=1, pruned_over_budget="fail", required_checks=[], **{kept: THRESHOLDS[kept]}
    )
    policy = parse_policy(document)
    assert getattr(policy, kept) is not None
    assert policy.required_checks == ()


def test_check_names_are_limited_to_128_characters_and_one_line() -> None:
    longest = "c" * 128
    evidence = GateEvidence.parse({"checks": {longest: True}})
    assert evidence.checks == {longest: True}
    document: dict[str, object] = {name: None for name in THRESHOLDS}
    document.update(policy_version=1, pruned_over_budget="fail", required_checks=[longest])
    assert parse_policy(document).required_checks == (longest,)

    for bad in ("c" * 129, "quorum_met\n"):
        with pytest.raises(GateEvidenceError) as raised:
            GateEvidence.parse({"checks": {bad: True}})
        assert str(raised.value) == (
            f"gate evidence is malformed: checks: Value error, invalid check names {[bad]}. "
            "Losses and differences must be finite and non-negative, sparsity in [0, 1]"
        )
        document["required_checks"] = [bad]
        with pytest.raises(GatePolicyError) as policy_raised:
            parse_policy(document)
        assert f"check name {bad!r} must start with a letter or digit" in str(policy_raised.value)
