"""The default round start follows the calendar: the UI shows recent rounds, not a month
of empty ones."""

from __future__ import annotations

from datetime import date

from tensorguard_assets.partitions import default_round_start, make_round_partitions


def test_daily_rounds_start_a_week_before_today() -> None:
    assert default_round_start("daily", date(2026, 12, 3)) == "2026-11-26"


def test_weekly_rounds_start_four_weeks_before_today() -> None:
    assert default_round_start("weekly", date(2026, 12, 3)) == "2026-11-05"


def test_the_default_start_offers_a_week_of_complete_daily_rounds() -> None:
    start = default_round_start("daily")
    keys = make_round_partitions("daily", start).get_partition_keys()
    assert len(keys) == 7
    assert keys[0] == start
