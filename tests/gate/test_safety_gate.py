"""Gate policy ``safety`` section: a release needs a verified, passing safety evaluation."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.gate import (
    GateDecision,
    GateEvidence,
    GatePolicyError,
    evaluate_gate,
    parse_policy,
)
from tensorguard.safety_evaluation import (
    SIGNATURE_CONTEXT,
    SafetyEvaluation,
    SafetyEvaluationError,
    SafetySignatureError,
    SignedSafetyEvaluation,
    UntrustedEvaluatorError,
    sign_evaluation,
)
from tests.gate.test_gate import criterion, good_evidence, policy_document

MODEL_DIGEST = hashlib.sha256(b"round-7 global adapter").hexdigest()
METRICS = {
    "episodes": 200,
    "collision_free_rate": 0.995,
    "force_limit_compliance": 0.99,
    "estop_latency_ms": 42.0,
    "workspace_adherence": 1.0,
    "task_success_rate": 0.87,
}


@pytest.fixture(scope="module")
def evaluator_key() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


def safety_section(*trusted: str, **overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "trusted_evaluators": list(trusted),
        "min_episodes": 100,
        "min_collision_free_rate": 0.99,
        "min_force_limit_compliance": 0.98,
        "max_estop_latency_ms": 100.0,
        "min_workspace_adherence": 0.99,
        "min_task_success_rate": 0.8,
    }
    section.update(overrides)
    return section


def evaluation(key: CompositeSigningKey, **overrides: Any) -> SafetyEvaluation:
    fields: dict[str, Any] = {
        "model_digest": MODEL_DIGEST,
        "suite": "pick-place-v2",
        "evaluator": "eva",
        "evaluator_fingerprint": key.public_key().fingerprint(),
        "evaluated_at": "2026-12-02T20:00:00+00:00",
        "metrics": METRICS,
    }
    fields.update(overrides)
    return SafetyEvaluation.model_validate(fields)


def gate(key: CompositeSigningKey, signed: SignedSafetyEvaluation | None) -> GateDecision:
    policy = parse_policy(policy_document(safety=safety_section(key.public_key().fingerprint())))
    document = good_evidence().model_dump(mode="json") | {"model_digest": MODEL_DIGEST}
    if signed is not None:
        document["safety_evaluation"] = signed.model_dump(mode="json")
    return evaluate_gate(policy, GateEvidence.parse(document))


def test_a_valid_evaluation_passes_the_gate(evaluator_key: CompositeSigningKey) -> None:
    decision = gate(evaluator_key, sign_evaluation(evaluation(evaluator_key), evaluator_key))
    assert decision.passed, decision.failures
    result = criterion(decision, "safety_evaluation")
    assert result.status == "passed"
    assert result.blocking
    assert GateDecision.from_json(decision.canonical_json()) == decision


def test_a_missing_evaluation_blocks_the_release(evaluator_key: CompositeSigningKey) -> None:
    decision = gate(evaluator_key, None)
    assert not decision.passed
    assert "safety_evaluation is missing" in criterion(decision, "safety_evaluation").reason


def _tampered_metrics(signed: SignedSafetyEvaluation) -> SignedSafetyEvaluation:
    document = signed.model_dump(mode="json")
    document["evaluation"]["metrics"]["collision_free_rate"] = 1.0
    return SignedSafetyEvaluation.parse(document)


def _flipped_signature(signed: SignedSafetyEvaluation) -> SignedSafetyEvaluation:
    raw = bytearray(base64.b64decode(signed.signature))
    raw[-1] ^= 1  # the Ed25519 half
    return signed.model_copy(update={"signature": base64.b64encode(bytes(raw)).decode()})


@pytest.mark.parametrize("tamper", [_tampered_metrics, _flipped_signature])
def test_a_bad_signature_blocks_the_release(
    evaluator_key: CompositeSigningKey, tamper: Any
) -> None:
    signed = tamper(sign_evaluation(evaluation(evaluator_key), evaluator_key))
    decision = gate(evaluator_key, signed)
    assert not decision.passed
    reason = criterion(decision, "safety_evaluation").reason
    assert "signature does not verify" in reason
    # the packaged decision re-verifies on parse and still fails
    assert not GateDecision.from_json(decision.canonical_json()).passed


def test_an_untrusted_evaluator_blocks_the_release(evaluator_key: CompositeSigningKey) -> None:
    stranger = CompositeSigningKey.generate()
    decision = gate(evaluator_key, sign_evaluation(evaluation(stranger), stranger))
    assert not decision.passed
    assert "not a trusted evaluator key" in criterion(decision, "safety_evaluation").reason


def test_an_evaluation_of_another_model_blocks(evaluator_key: CompositeSigningKey) -> None:
    other = evaluation(evaluator_key, model_digest=hashlib.sha256(b"other").hexdigest())
    decision = gate(evaluator_key, sign_evaluation(other, evaluator_key))
    assert not decision.passed
    assert "not of this round's model" in criterion(decision, "safety_evaluation").reason


def test_metrics_below_thresholds_block(evaluator_key: CompositeSigningKey) -> None:
    bad = evaluation(evaluator_key, metrics=METRICS | {"estop_latency_ms": 150.0, "episodes": 5})
    decision = gate(evaluator_key, sign_evaluation(bad, evaluator_key))
    reason = criterion(decision, "safety_evaluation").reason
    assert not decision.passed
    assert "estop_latency_ms 150 exceeds the maximum 100" in reason
    assert "episodes 5 is below the required minimum 100" in reason


def test_verification_refuses_untrusted_and_forged(evaluator_key: CompositeSigningKey) -> None:
    signed = sign_evaluation(evaluation(evaluator_key), evaluator_key)
    fingerprint = evaluator_key.public_key().fingerprint()
    assert signed.verify({fingerprint}) == evaluation(evaluator_key)
    with pytest.raises(UntrustedEvaluatorError):
        signed.verify(set())
    with pytest.raises(SafetySignatureError):
        _flipped_signature(signed).verify({fingerprint})
    # the same key signing the same bytes without the safety context (any other use of
    # the key) does not make a valid evaluation: the context separates the domains
    raw = evaluator_key.sign(evaluation(evaluator_key).canonical_bytes())
    other_context = signed.model_copy(update={"signature": base64.b64encode(raw).decode()})
    with pytest.raises(SafetySignatureError):
        other_context.verify({fingerprint})
    assert SIGNATURE_CONTEXT.startswith(b"tensorguard/safety-evaluation")
    # a key substituted for the named one is refused even when it is trusted
    stranger = CompositeSigningKey.generate()
    swapped = signed.model_copy(
        update={"public_key": base64.b64encode(stranger.public_key().public_bytes()).decode()}
    )
    with pytest.raises(SafetySignatureError, match="not the key the evaluation names"):
        swapped.verify({fingerprint, stranger.public_key().fingerprint()})
    with pytest.raises(SafetyEvaluationError):
        sign_evaluation(evaluation(evaluator_key), stranger)


def test_policy_safety_section_is_optional_and_validated(
    evaluator_key: CompositeSigningKey,
) -> None:
    without = parse_policy(policy_document())
    assert "safety" not in without.model_dump()  # old policies keep their digest
    assert all(
        c.name != "safety_evaluation" for c in evaluate_gate(without, good_evidence()).criteria
    )
    assert "model_digest" not in good_evidence().model_dump()
    with pytest.raises(GatePolicyError, match="trusted_evaluators"):
        parse_policy(policy_document(safety=safety_section()))
    fingerprint = evaluator_key.public_key().fingerprint()
    with pytest.raises(GatePolicyError, match="min_task_success_rate"):
        parse_policy(policy_document(safety=safety_section(fingerprint, min_task_success_rate=2)))
