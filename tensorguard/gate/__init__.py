"""Release gate: a versioned policy, typed evidence, and a canonical pass/fail decision.

Typical use::

    policy = load_policy(DEFAULT_POLICY_FILE)
    evidence = GateEvidence.parse({...})
    decision = evaluate_gate(policy, evidence)
    if not decision.passed:
        raise SystemExit("\\n".join(decision.failures))
    shipped = [name for name in artifacts if name not in decision.excluded]
    decision_bytes = decision.canonical_json()   # packaged; decision.digest() in the manifest
"""

from tensorguard.gate.decision import (
    BOUND_CRITERIA,
    DECISION_FORMAT,
    PRUNED_MODEL,
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
from tensorguard.gate.evidence import FirstRelease, GateEvidence, MoaiSelfCheck, PreviousRelease
from tensorguard.gate.policy import (
    DEFAULT_POLICY_FILE,
    GatePolicy,
    LossDelta,
    PrunedOverBudget,
    RegressionLimit,
    load_policy,
    parse_policy,
)

__all__ = [
    "BOUND_CRITERIA",
    "DECISION_FORMAT",
    "DEFAULT_POLICY_FILE",
    "PRUNED_MODEL",
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
    "MoaiSelfCheck",
    "PreviousRelease",
    "PrunedOverBudget",
    "RegressionLimit",
    "evaluate_gate",
    "load_policy",
    "parse_policy",
]
