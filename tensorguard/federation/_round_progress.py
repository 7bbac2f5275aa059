"""When a round moves on: the deadline rule, and bounded retries of site training.

A round never waits forever for a silent site. Before its deadline it waits until every
registered site has reported; at the deadline it goes on with the sites that made it:
the aggregation then either meets the round's quorum and releases, or fails closed
naming the silent sites. Failed site trainings are retried within the round, each
attempt under a new run key, up to :data:`MAX_TRAINING_ATTEMPTS`.

This module decides; the Dagster sensor only turns the decision into run requests.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

MAX_TRAINING_ATTEMPTS = 3


class RoundStage(StrEnum):
    """What the round needs next."""

    WAITING = "waiting"
    """Sites are still due and the deadline has not passed."""
    AGGREGATE_ALL = "aggregate_all"
    """Every registered site reported: aggregate now."""
    AGGREGATE_AT_DEADLINE = "aggregate_at_deadline"
    """The deadline passed: aggregate whoever reported (quorum decides the outcome)."""


@dataclass(frozen=True)
class RoundProgress:
    """The decision for one round and the sites it is still missing."""

    stage: RoundStage
    silent_sites: tuple[str, ...]
    reported: int
    quorum: int

    @property
    def quorum_met(self) -> bool:
        """Whether enough sites reported for the aggregation to succeed."""
        return self.reported >= self.quorum

    def describe(self) -> str:
        """One line for logs."""
        silent = ", ".join(self.silent_sites) or "none"
        return (
            f"{self.stage.value}: {self.reported} reported, quorum {self.quorum}, silent: {silent}"
        )


def round_progress(
    registered: Collection[str],
    reported: Collection[str],
    *,
    deadline: datetime | None,
    quorum: int,
    now: datetime,
) -> RoundProgress:
    """Decide whether a round waits or aggregates (see the module docstring).

    ``registered`` are the round's sites, ``reported`` those whose update exists.
    ``deadline=None`` (a round spec without one) means waiting for every site.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    counted = set(reported) & set(registered)
    silent = tuple(sorted(set(registered) - counted))
    if registered and not silent:
        stage = RoundStage.AGGREGATE_ALL
    elif deadline is not None and now >= deadline:
        stage = RoundStage.AGGREGATE_AT_DEADLINE
    else:
        stage = RoundStage.WAITING
    return RoundProgress(stage, silent, len(counted), quorum)


def training_attempt(failed_attempts: int) -> int | None:
    """The number of the next training attempt for a site, or None when exhausted.

    Attempt numbers start at 1; each failed run of a site's training in this round
    moves to the next one, so its run key changes and the run is requested again.
    """
    if failed_attempts < 0:
        raise ValueError("failed_attempts cannot be negative")
    attempt = failed_attempts + 1
    return attempt if attempt <= MAX_TRAINING_ATTEMPTS else None
