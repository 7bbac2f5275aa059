"""Canary rollout core: deterministic cohorts and the PROMOTE / ROLLBACK / WAIT decision."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tensorguard.fleet.canary import (
    CanaryError,
    CanaryTelemetry,
    CanaryVerdict,
    canary_cohort,
    canary_decision,
)
from tensorguard.gate.canary_policy import CanaryPolicy
from tensorguard.gate.errors import GatePolicyError
from tensorguard.gate.policy import DEFAULT_POLICY_FILE, load_policy, parse_policy
from tests.gate.test_gate import policy_document

POLICY = CanaryPolicy(
    fraction=0.1,
    min_nodes_reporting=2,
    min_samples=20,
    observation_window_s=900,
    max_wait_s=7200,
    max_error_rate=0.02,
    max_mean_latency_ms=250.0,
    max_safety_events=0,
    max_install_failures=0,
)
HEALTHY = CanaryTelemetry(
    elapsed_s=1000,
    nodes_reporting=3,
    samples=30,
    mean_error_rate=0.01,
    mean_latency_ms=120.0,
    safety_events=0,
    install_failures=0,
)
node_ids = st.lists(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True), max_size=60)


@given(nodes=node_ids, fraction=st.floats(0.001, 1.0))
def test_the_cohort_has_the_fraction_and_is_deterministic(
    nodes: list[str], fraction: float
) -> None:
    cohort = canary_cohort(nodes, fraction, "plant-a/stable")
    unique = set(nodes)
    assert cohort <= unique
    expected = 0 if not unique else max(1, math.ceil(fraction * len(unique) - 1e-9))
    assert len(cohort) == expected
    assert canary_cohort(reversed(nodes), fraction, "plant-a/stable") == cohort


@given(nodes=node_ids, newcomer=st.from_regex(r"new-[a-z0-9]{1,8}", fullmatch=True))
def test_enrolling_a_node_moves_at_most_one_other(nodes: list[str], newcomer: str) -> None:
    before = canary_cohort(nodes, 0.25, "salt")
    after = canary_cohort([*nodes, newcomer], 0.25, "salt")
    assert len(before - after) <= 1


def test_cohorts_differ_by_salt_and_spread_over_nodes() -> None:
    nodes = [f"robot-{i}" for i in range(1000)]
    stable = canary_cohort(nodes, 0.1, "plant-a/stable")
    beta = canary_cohort(nodes, 0.1, "plant-a/beta")
    assert len(stable) == len(beta) == 100
    assert stable != beta
    low_half = {f"robot-{i}" for i in range(500)}
    assert 30 < len(stable & low_half) < 70  # not the first ids: hashed order


def test_a_tiny_fraction_still_tries_one_node() -> None:
    assert len(canary_cohort(["a", "b", "c"], 1e-12, "s")) == 1


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_an_invalid_fraction_is_refused(fraction: float) -> None:
    with pytest.raises(CanaryError, match="fraction"):
        canary_cohort(["a"], fraction, "s")


def test_healthy_telemetry_after_the_window_promotes() -> None:
    decision = canary_decision(HEALTHY, POLICY)
    assert decision.verdict is CanaryVerdict.PROMOTE
    assert "3 canary nodes, 30 samples" in decision.reasons[0]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"mean_error_rate": 0.03}, "max_error_rate"),
        ({"mean_latency_ms": 251.0}, "max_mean_latency_ms"),
        ({"safety_events": 1}, "max_safety_events"),
        ({"install_failures": 1}, "max_install_failures"),
    ],
)
def test_a_breach_rolls_back_at_once(change: dict[str, Any], fragment: str) -> None:
    early = replace(HEALTHY, elapsed_s=10, nodes_reporting=1, samples=1, **change)
    decision = canary_decision(early, POLICY)
    assert decision.verdict is CanaryVerdict.ROLLBACK
    assert any(fragment in reason for reason in decision.reasons)
    assert canary_decision(replace(HEALTHY, **change), POLICY).verdict is CanaryVerdict.ROLLBACK


def test_values_at_the_thresholds_pass() -> None:
    edge = replace(HEALTHY, mean_error_rate=0.02, mean_latency_ms=250.0)
    assert canary_decision(edge, POLICY).verdict is CanaryVerdict.PROMOTE


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"nodes_reporting": 1}, "min_nodes_reporting"),
        ({"samples": 19}, "min_samples"),
        ({"mean_error_rate": None}, "no error rate"),
        ({"mean_latency_ms": None}, "no inference latency"),
        ({"elapsed_s": 899}, "observation_window_s"),
    ],
)
def test_too_little_evidence_waits(change: dict[str, Any], fragment: str) -> None:
    decision = canary_decision(replace(HEALTHY, **change), POLICY)
    assert decision.verdict is CanaryVerdict.WAIT
    assert any(fragment in reason for reason in decision.reasons)


def test_too_little_evidence_after_max_wait_rolls_back() -> None:
    late = replace(HEALTHY, elapsed_s=7200, samples=5)
    decision = canary_decision(late, POLICY)
    assert decision.verdict is CanaryVerdict.ROLLBACK
    assert "max_wait_s" in decision.reasons[0]


def test_no_telemetry_waits_then_rolls_back() -> None:
    waiting = canary_decision(None, POLICY, elapsed_s=60)
    assert waiting.verdict is CanaryVerdict.WAIT
    assert waiting.reasons == ("no telemetry from the canary cohort in the window",)
    assert canary_decision(None, POLICY, elapsed_s=7200).verdict is CanaryVerdict.ROLLBACK
    with pytest.raises(CanaryError, match="elapsed_s"):
        canary_decision(None, POLICY)


def test_latency_threshold_can_be_disabled() -> None:
    no_latency = POLICY.model_copy(update={"max_mean_latency_ms": None})
    window = replace(HEALTHY, mean_latency_ms=None)
    assert canary_decision(window, no_latency).verdict is CanaryVerdict.PROMOTE


def test_impossible_telemetry_is_refused() -> None:
    with pytest.raises(CanaryError):
        replace(HEALTHY, samples=-1)
    with pytest.raises(CanaryError):
        replace(HEALTHY, nodes_reporting=5, samples=2)


def test_the_gate_policy_carries_the_canary_section() -> None:
    shipped = load_policy(DEFAULT_POLICY_FILE)
    assert shipped.canary is not None
    assert 0 < shipped.canary.fraction <= 1
    assert parse_policy(policy_document()).canary is None  # no canary stage
    section = POLICY.model_dump()
    with_canary = parse_policy(policy_document(canary=section))
    assert with_canary.canary == POLICY
    assert with_canary.digest() != parse_policy(policy_document()).digest()
    for broken, fragment in (
        ({**section, "fraction": 0}, "fraction"),
        ({**section, "max_wait_s": 10}, "max_wait_s"),
        ({**section, "extra": 1}, "extra"),
        ({k: v for k, v in section.items() if k != "min_samples"}, "min_samples"),
    ):
        with pytest.raises(GatePolicyError, match=fragment):
            parse_policy(policy_document(canary=broken))
