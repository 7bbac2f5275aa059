"""The first round partition of the test session.

The default ``TG_ROUND_START`` moves with the calendar (a week before today), while the
tests name their rounds by fixed dates; every test, and every process a test starts, gets
this start instead.
"""

TEST_ROUND_START = "2026-11-01"
