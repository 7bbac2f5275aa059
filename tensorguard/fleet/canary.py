"""Canary rollout: which nodes try a release first, and whether it goes on or back.

* :func:`canary_cohort` picks ``ceil(fraction * n)`` of the ``n`` enrolled nodes (at
  least one): the nodes whose SHA-256 of ``<salt>\\n<node id>`` is lowest. The choice is
  deterministic (every process computes the same cohort), uniform over node ids, and
  stable: enrolling or removing one node moves at most one other node in or out.
* :func:`canary_decision` turns the canary cohort's telemetry window and the gate
  policy's ``canary`` thresholds (:class:`~tensorguard.gate.canary_policy.CanaryPolicy`)
  into ``PROMOTE``, ``ROLLBACK`` or ``WAIT`` with the reasons. A breach rolls back at
  once; missing numbers are never filled in: a threshold whose value nobody reported
  waits (and rolls back after ``max_wait_s``).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from tensorguard.fleet.errors import FleetError
from tensorguard.gate.canary_policy import CanaryPolicy


class CanaryError(FleetError):
    """A canary cohort or decision was asked for with invalid input."""


class CanaryVerdict(StrEnum):
    """What to do with a release on its canary cohort."""

    PROMOTE = "promote"
    ROLLBACK = "rollback"
    WAIT = "wait"


@dataclass(frozen=True)
class CanaryDecision:
    """The verdict and why (one reason per criterion that decided it)."""

    verdict: CanaryVerdict
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class CanaryTelemetry:
    """The canary cohort's telemetry in the window (``None``: nobody reported that value).

    ``elapsed_s`` is the time since the rollout to the cohort began.
    """

    elapsed_s: float
    nodes_reporting: int
    samples: int
    mean_error_rate: float | None
    mean_latency_ms: float | None
    safety_events: int
    install_failures: int

    def __post_init__(self) -> None:
        """Refuse counts and times that cannot come from real telemetry."""
        if min(self.elapsed_s, self.nodes_reporting, self.samples) < 0:
            raise CanaryError("elapsed time, nodes reporting and samples cannot be negative")
        if min(self.safety_events, self.install_failures) < 0:
            raise CanaryError("safety events and install failures cannot be negative")
        if self.nodes_reporting > self.samples:
            raise CanaryError("more nodes reporting than samples received")


def canary_rank(salt: str, node_id: str) -> str:
    """The node's place in the canary order for ``salt`` (lower goes first)."""
    return hashlib.sha256(f"{salt}\n{node_id}".encode()).hexdigest()


def canary_cohort(node_ids: Iterable[str], fraction: float, salt: str) -> frozenset[str]:
    """The ``ceil(fraction * n)`` nodes (at least one) of lowest :func:`canary_rank`.

    ``salt`` (e.g. ``"<fleet>/<channel>"``) keeps cohorts of different channels apart;
    the same salt gives the same cohort every time.
    """
    if not 0.0 < fraction <= 1.0 or math.isnan(fraction):
        raise CanaryError(f"canary fraction must be in (0, 1], got {fraction!r}")
    unique = sorted(set(node_ids))
    if not unique:
        return frozenset()
    size = max(1, math.ceil(fraction * len(unique) - 1e-9))
    ranked = sorted(unique, key=lambda node_id: canary_rank(salt, node_id))
    return frozenset(ranked[:size])


def _breaches(window: CanaryTelemetry, policy: CanaryPolicy) -> list[str]:
    breaches = []
    if window.mean_error_rate is not None and window.mean_error_rate > policy.max_error_rate:
        breaches.append(
            f"mean error rate {window.mean_error_rate:.4g} > max_error_rate "
            f"{policy.max_error_rate:.4g}"
        )
    if (
        policy.max_mean_latency_ms is not None
        and window.mean_latency_ms is not None
        and window.mean_latency_ms > policy.max_mean_latency_ms
    ):
        breaches.append(
            f"mean inference latency {window.mean_latency_ms:.4g} ms > max_mean_latency_ms "
            f"{policy.max_mean_latency_ms:.4g}"
        )
    if window.safety_events > policy.max_safety_events:
        breaches.append(
            f"{window.safety_events} safety events > max_safety_events {policy.max_safety_events}"
        )
    if window.install_failures > policy.max_install_failures:
        breaches.append(
            f"{window.install_failures} failed installs > max_install_failures "
            f"{policy.max_install_failures}"
        )
    return breaches


def _missing(window: CanaryTelemetry | None, policy: CanaryPolicy) -> list[str]:
    if window is None:
        return ["no telemetry from the canary cohort in the window"]
    missing = []
    if window.nodes_reporting < policy.min_nodes_reporting:
        missing.append(
            f"{window.nodes_reporting} canary nodes reporting < min_nodes_reporting "
            f"{policy.min_nodes_reporting}"
        )
    if window.samples < policy.min_samples:
        missing.append(f"{window.samples} samples < min_samples {policy.min_samples}")
    if window.mean_error_rate is None:
        missing.append("no error rate reported")
    if policy.max_mean_latency_ms is not None and window.mean_latency_ms is None:
        missing.append("no inference latency reported")
    return missing


def canary_decision(
    window: CanaryTelemetry | None, policy: CanaryPolicy, *, elapsed_s: float | None = None
) -> CanaryDecision:
    """PROMOTE, ROLLBACK or WAIT for the canary cohort's telemetry ``window``.

    ``window`` is ``None`` when the cohort sent nothing in the window; then
    ``elapsed_s`` (time since the rollout began) must be given.
    """
    if window is not None:
        elapsed = window.elapsed_s
        breaches = _breaches(window, policy)
        if breaches:
            return CanaryDecision(CanaryVerdict.ROLLBACK, tuple(breaches))
    elif elapsed_s is None:
        raise CanaryError("without telemetry, give elapsed_s (time since the rollout began)")
    else:
        elapsed = elapsed_s
    missing = _missing(window, policy)
    if missing:
        if elapsed >= policy.max_wait_s:
            reasons = (f"not enough telemetry after max_wait_s {policy.max_wait_s} s", *missing)
            return CanaryDecision(CanaryVerdict.ROLLBACK, reasons)
        return CanaryDecision(CanaryVerdict.WAIT, tuple(missing))
    if elapsed < policy.observation_window_s:
        return CanaryDecision(
            CanaryVerdict.WAIT,
            (f"observed {elapsed:.0f} s < observation_window_s {policy.observation_window_s}",),
        )
    return CanaryDecision(
        CanaryVerdict.PROMOTE,
        (
            f"{window.nodes_reporting if window else 0} canary nodes, "
            f"{window.samples if window else 0} samples over {elapsed:.0f} s within every "
            "threshold",
        ),
    )
