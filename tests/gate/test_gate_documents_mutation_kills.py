"""The gate's document building blocks, pinned at their edges (#18 item 6).

The mutation run over ``gate/canonical_model.py``, ``canary_policy.py``,
``safety_policy.py`` and ``errors.py`` found the canonical form's JSON dump mode
unchecked: every field of today's documents dumps the same in Python and JSON mode, so
a base class that hashed the Python dump would go unnoticed until a section with a
timestamp or an enum came along. mutmut makes no mutant of pydantic field bounds or of
decorated validators and serializers, so the canary and safety sections' rules are
pinned here one bound at a time, with the message an operator reads when the policy
file is refused (hand-made mutants of each rule, docs/SECURITY.md §4).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
import rfc8785
from pydantic import BaseModel, ValidationError

from tensorguard.errors import ConfigurationError, TensorGuardError
from tensorguard.gate import GatePolicyError, parse_policy
from tensorguard.gate.canary_policy import CanaryPolicy
from tensorguard.gate.canonical_model import CanonicalModel
from tensorguard.gate.errors import GateError, validate_or_raise
from tests.gate.test_gate import policy_document

HINT = (
    "Fix the file; every threshold key is required (write null to disable one) and "
    "unknown keys are rejected"
)
FINGERPRINT_A = "a" * 64
FINGERPRINT_B = "b" * 64


def refusal(problems: str) -> str:
    """The whole message ``parse_policy`` raises for these problems."""
    return f"policy is not a valid gate policy: {problems}. {HINT}"


# --- the canonical form -----------------------------------------------------------


class Channel(enum.Enum):
    STABLE = "stable"


class Stamped(CanonicalModel):
    """A document with fields whose Python dump is not JSON: a timestamp and an enum."""

    omitted_when_absent: ClassVar[tuple[str, ...]] = ("note",)

    at: datetime
    channel: Channel
    note: str | None = None
    kept: str | None = None


STAMPED = Stamped(at=datetime(2026, 12, 3, 16, 0, tzinfo=UTC), channel=Channel.STABLE)
STAMPED_JSON = b'{"at":"2026-12-03T16:00:00Z","channel":"stable","kept":null}'


def test_the_canonical_form_is_rfc8785_of_the_json_dump() -> None:
    assert STAMPED.canonical_json() == STAMPED_JSON
    assert STAMPED.canonical_json() == rfc8785.dumps(json.loads(STAMPED.model_dump_json()))
    assert STAMPED.digest() == hashlib.sha256(STAMPED_JSON).hexdigest()


def test_an_omitted_section_appears_once_it_is_set() -> None:
    noted = STAMPED.model_copy(update={"note": "x"})
    assert noted.canonical_json() == (
        b'{"at":"2026-12-03T16:00:00Z","channel":"stable","kept":null,"note":"x"}'
    )
    assert noted.digest() != STAMPED.digest()


def test_a_dump_that_excludes_an_omittable_section_still_works() -> None:
    assert STAMPED.model_dump(mode="json", exclude={"note", "kept"}) == {
        "at": "2026-12-03T16:00:00Z",
        "channel": "stable",
    }


# --- the canary section -----------------------------------------------------------

CANARY: dict[str, Any] = {
    "fraction": 0.1,
    "min_nodes_reporting": 2,
    "min_samples": 20,
    "observation_window_s": 900,
    "max_wait_s": 7200,
    "max_error_rate": 0.02,
    "max_mean_latency_ms": 250.0,
    "max_safety_events": 0,
    "max_install_failures": 0,
}
EDGES: dict[str, Any] = {
    "fraction": 1.0,
    "min_nodes_reporting": 1,
    "min_samples": 1,
    "observation_window_s": 0,
    "max_wait_s": 1,
    "max_error_rate": 1.0,
    "max_mean_latency_ms": None,
    "max_safety_events": 0,
    "max_install_failures": 0,
}


def canary(**overrides: Any) -> dict[str, Any]:
    return {**CANARY, **overrides}


def test_every_canary_bound_is_inclusive_where_the_docs_say_so() -> None:
    policy = parse_policy(policy_document(canary=EDGES)).canary
    assert policy == CanaryPolicy(**EDGES)
    low = parse_policy(policy_document(canary=canary(fraction=1e-9, max_error_rate=0.0)))
    assert low.canary is not None
    assert (low.canary.fraction, low.canary.max_error_rate) == (1e-9, 0.0)
    small = parse_policy(policy_document(canary=canary(max_mean_latency_ms=1e-9)))
    assert small.canary is not None
    assert small.canary.max_mean_latency_ms == 1e-9


GT0 = "Input should be greater than 0"
GE0 = "Input should be greater than or equal to 0"
GE1 = "Input should be greater than or equal to 1"
LE1 = "Input should be less than or equal to 1"
FINITE = "Input should be a finite number"
INTEGER = "Input should be a valid integer"

CANARY_REFUSALS: list[tuple[str, str, object, str]] = [
    ("fraction-zero", "fraction", 0.0, GT0),
    ("fraction-above-one", "fraction", 1.0000001, LE1),
    ("fraction-nan", "fraction", math.nan, FINITE),
    ("fraction-inf", "fraction", math.inf, FINITE),
    ("nodes-zero", "min_nodes_reporting", 0, GE1),
    ("nodes-bool", "min_nodes_reporting", True, INTEGER),
    ("nodes-text", "min_nodes_reporting", "2", INTEGER),
    ("nodes-float", "min_nodes_reporting", 2.0, INTEGER),
    ("samples-zero", "min_samples", 0, GE1),
    ("samples-bool", "min_samples", True, INTEGER),
    ("samples-text", "min_samples", "20", INTEGER),
    ("window-negative", "observation_window_s", -1, GE0),
    ("window-text", "observation_window_s", "900", INTEGER),
    ("wait-zero", "max_wait_s", 0, GT0),
    ("wait-text", "max_wait_s", "7200", INTEGER),
    ("error-rate-negative", "max_error_rate", -0.01, GE0),
    ("error-rate-above-one", "max_error_rate", 1.01, LE1),
    ("error-rate-nan", "max_error_rate", math.nan, FINITE),
    ("latency-zero", "max_mean_latency_ms", 0.0, GT0),
    ("latency-inf", "max_mean_latency_ms", math.inf, FINITE),
    ("latency-nan", "max_mean_latency_ms", math.nan, FINITE),
    ("safety-events-negative", "max_safety_events", -1, GE0),
    ("safety-events-bool", "max_safety_events", False, INTEGER),
    ("install-failures-negative", "max_install_failures", -1, GE0),
    ("install-failures-text", "max_install_failures", "0", INTEGER),
]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [case[1:] for case in CANARY_REFUSALS],
    ids=[case[0] for case in CANARY_REFUSALS],
)
def test_each_canary_threshold_is_refused_past_its_bound(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(GatePolicyError) as caught:
        parse_policy(policy_document(canary=canary(**{field: value})))
    assert str(caught.value) == refusal(f"canary.{field}: {message}")


@pytest.mark.parametrize("field", sorted(CANARY))
def test_every_canary_key_is_required(field: str) -> None:
    document = canary()
    del document[field]
    with pytest.raises(GatePolicyError) as caught:
        parse_policy(policy_document(canary=document))
    assert str(caught.value) == refusal(f"canary.{field}: Field required")


def test_an_unknown_canary_key_is_refused_and_the_section_is_frozen() -> None:
    with pytest.raises(GatePolicyError) as caught:
        parse_policy(policy_document(canary=canary(max_latency_ms=5)))
    assert str(caught.value) == refusal("canary.max_latency_ms: Extra inputs are not permitted")
    policy = CanaryPolicy(**CANARY)
    with pytest.raises(ValidationError, match="Instance is frozen"):
        policy.fraction = 0.5


def test_a_canary_that_could_never_finish_waiting_is_refused() -> None:
    same = parse_policy(policy_document(canary=canary(observation_window_s=900, max_wait_s=900)))
    assert same.canary is not None
    assert same.canary.max_wait_s == same.canary.observation_window_s == 900
    with pytest.raises(GatePolicyError) as caught:
        parse_policy(policy_document(canary=canary(observation_window_s=901, max_wait_s=900)))
    assert str(caught.value) == refusal(
        "canary: Value error, max_wait_s (900) is shorter than observation_window_s (901): "
        "every canary would be rolled back"
    )


# --- the safety section -----------------------------------------------------------

SAFETY: dict[str, Any] = {
    "min_episodes": 100,
    "min_collision_free_rate": 0.99,
    "min_force_limit_compliance": 0.98,
    "max_estop_latency_ms": 100.0,
    "min_workspace_adherence": 0.99,
    "min_task_success_rate": 0.8,
}


def test_trusted_evaluators_are_kept_in_order() -> None:
    section = {**SAFETY, "trusted_evaluators": [FINGERPRINT_B, FINGERPRINT_A]}
    policy = parse_policy(policy_document(safety=section))
    assert policy.safety is not None
    assert policy.safety.trusted_evaluators == (FINGERPRINT_B, FINGERPRINT_A)
    one = parse_policy(policy_document(safety={**SAFETY, "trusted_evaluators": [FINGERPRINT_A]}))
    assert one.safety is not None
    assert one.safety.trusted_evaluators == (FINGERPRINT_A,)


@pytest.mark.parametrize(
    ("evaluators", "problem"),
    [
        ([], "Tuple should have at least 1 item after validation, not 0"),
        (
            [FINGERPRINT_A, FINGERPRINT_B, FINGERPRINT_A],
            "Value error, trusted_evaluators lists a fingerprint more than once",
        ),
    ],
    ids=["none", "duplicate"],
)
def test_trusted_evaluators_must_be_a_non_empty_set(evaluators: list[str], problem: str) -> None:
    with pytest.raises(GatePolicyError) as caught:
        parse_policy(policy_document(safety={**SAFETY, "trusted_evaluators": evaluators}))
    assert str(caught.value) == refusal(f"safety.trusted_evaluators: {problem}")


# --- validate_or_raise ------------------------------------------------------------


class Secretive(BaseModel):
    token: int


class ExampleError(GateError, ConfigurationError):
    """An error type of the caller's choosing."""


def test_validate_or_raise_names_every_problem_without_the_input() -> None:
    assert validate_or_raise(Secretive, {"token": 7}, ExampleError, "w", "h") == Secretive(token=7)
    with pytest.raises(ExampleError) as caught:
        validate_or_raise(
            Secretive,
            {"token": "hunter2-secret", "extra": 1},
            ExampleError,
            "the example is malformed",
            "Give an integer token",
        )
    error = caught.value
    assert str(error) == (
        "the example is malformed: token: Input should be a valid integer, unable to parse "
        "string as an integer. Give an integer token"
    )
    assert isinstance(error, TensorGuardError)
    assert error.__cause__ is None
    assert error.__suppress_context__
