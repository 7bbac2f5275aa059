"""The deadline rule: a silent site never stalls a round; retries are bounded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tensorguard.federation._round_progress import (
    MAX_TRAINING_ATTEMPTS,
    RoundStage,
    round_progress,
    training_attempt,
)

SITES = ("a", "b", "c", "d", "e")
DEADLINE = datetime(2026, 12, 2, 12, tzinfo=UTC)
BEFORE = DEADLINE - timedelta(seconds=1)


def test_a_round_waits_for_silent_sites_only_until_its_deadline() -> None:
    waiting = round_progress(SITES, ["a", "b", "c"], deadline=DEADLINE, quorum=3, now=BEFORE)
    assert waiting.stage is RoundStage.WAITING
    assert waiting.silent_sites == ("d", "e")
    due = round_progress(SITES, ["a", "b", "c"], deadline=DEADLINE, quorum=3, now=DEADLINE)
    assert due.stage is RoundStage.AGGREGATE_AT_DEADLINE
    assert due.quorum_met
    assert "silent: d, e" in due.describe()


def test_below_quorum_at_the_deadline_still_goes_on_to_fail_closed_with_names() -> None:
    due = round_progress(SITES, ["a"], deadline=DEADLINE, quorum=3, now=DEADLINE)
    assert due.stage is RoundStage.AGGREGATE_AT_DEADLINE
    assert not due.quorum_met
    assert due.silent_sites == ("b", "c", "d", "e")


def test_a_complete_round_aggregates_at_once_and_unknown_reports_do_not_count() -> None:
    complete = round_progress(SITES, [*SITES, "intruder"], deadline=None, quorum=2, now=BEFORE)
    assert complete.stage is RoundStage.AGGREGATE_ALL
    assert complete.reported == len(SITES)
    no_deadline = round_progress(SITES, ["a", "intruder"], deadline=None, quorum=2, now=BEFORE)
    assert no_deadline.stage is RoundStage.WAITING
    assert no_deadline.reported == 1


def test_no_registered_site_never_aggregates_and_naive_time_is_refused() -> None:
    assert round_progress([], [], deadline=None, quorum=2, now=BEFORE).stage is RoundStage.WAITING
    with pytest.raises(ValueError, match="timezone"):
        round_progress(SITES, [], deadline=DEADLINE, quorum=2, now=datetime(2026, 1, 1))


def test_training_retries_are_numbered_and_bounded() -> None:
    assert [training_attempt(n) for n in range(MAX_TRAINING_ATTEMPTS)] == [1, 2, 3]
    assert training_attempt(MAX_TRAINING_ATTEMPTS) is None
    with pytest.raises(ValueError, match="cannot be negative"):
        training_attempt(-1)
