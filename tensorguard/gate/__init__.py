"""Release gate: a versioned policy, typed evidence, and a canonical pass/fail decision.

Typical use::

    policy = load_policy(DEFAULT_POLICY_FILE)
    evidence = GateEvidence.parse({...})
    decision = evaluate_gate(policy, evidence)
    if not decision.passed:
        raise SystemExit("\\n".join(decision.failures))
    decision_bytes = decision.canonical_json()   # packaged; decision.digest() in the manifest
"""

from tensorguard.gate.decision import (
    DECISION_FORMAT,
    CriterionResult,
    GateDecision,
    evaluate_gate,
)
from tensorguard.gate.errors import (
    GateDecisionError,
    GateError,
    GateEvidenceError,
    GatePolicyError,
)
from tensorguard.gate.evidence import FirstRelease, GateEvidence, PreviousRelease
from tensorguard.gate.policy import (
    DEFAULT_POLICY_FILE,
    GatePolicy,
    LossDelta,
    RegressionLimit,
    load_policy,
    parse_policy,
)

__all__ = [
    "DECISION_FORMAT",
    "DEFAULT_POLICY_FILE",
    "CriterionResult",
    "FirstRelease",
    "GateDecision",
    "GateDecisionError",
    "GateError",
    "GateEvidence",
    "GateEvidenceError",
    "GatePolicy",
    "GatePolicyError",
    "LossDelta",
    "PreviousRelease",
    "RegressionLimit",
    "evaluate_gate",
    "load_policy",
    "parse_policy",
]
