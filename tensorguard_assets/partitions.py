"""Partitions: rounds are time windows (scheduled retraining), sites are dynamic.

``TG_ROUND_CADENCE`` and ``TG_ROUND_START`` are read when the definitions load, unlike the
resources' ``EnvVar`` settings (resolved at run start): Dagster partitions are static
definitions, so every process of a deployment must see the same values.
"""

from __future__ import annotations

import os
import warnings
from datetime import UTC, date, datetime, timedelta

from dagster import (
    BetaWarning,
    DailyPartitionsDefinition,
    DynamicPartitionsDefinition,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    TimeWindowPartitionsDefinition,
    WeeklyPartitionsDefinition,
)

ROUND_DIMENSION = "round"
SITE_DIMENSION = "site"
ROUND_HISTORY_DAYS = {"daily": 7, "weekly": 28}
"""How far back the default round partitions start: a week of daily rounds, four weekly."""
# Rounds start at 02:00 after their window closes (weekly windows close on Sunday 00:00).
ROUND_SCHEDULE_CRON = {"daily": "0 2 * * *", "weekly": "0 2 * * 0"}


def make_round_partitions(cadence: str, start_date: str) -> TimeWindowPartitionsDefinition:
    """A daily or weekly round partition; other cadences are a configuration error."""
    if cadence == "daily":
        return DailyPartitionsDefinition(start_date=start_date)
    if cadence == "weekly":
        return WeeklyPartitionsDefinition(start_date=start_date)
    raise ValueError(f"TG_ROUND_CADENCE={cadence!r} is not supported; use 'daily' or 'weekly'")


def default_round_start(cadence: str, today: date | None = None) -> str:
    """The default ``TG_ROUND_START``: ``today`` (UTC, at definitions load) minus a week
    for daily rounds, minus four weeks for weekly ones, so the UI shows recent rounds
    rather than a month of empty ones. Set ``TG_ROUND_START`` to keep older rounds."""
    day = today if today is not None else datetime.now(UTC).date()
    return (day - timedelta(days=ROUND_HISTORY_DAYS.get(cadence, 7))).isoformat()


ROUND_CADENCE = os.environ.get("TG_ROUND_CADENCE", "daily")
DEFAULT_ROUND_START = default_round_start(ROUND_CADENCE)
"""Computed when the definitions load (see :func:`default_round_start`)."""
ROUND_START = os.environ.get("TG_ROUND_START") or DEFAULT_ROUND_START
round_partitions = make_round_partitions(ROUND_CADENCE, ROUND_START)
site_partitions = DynamicPartitionsDefinition(name="sites")
round_site_partitions = MultiPartitionsDefinition(
    {ROUND_DIMENSION: round_partitions, SITE_DIMENSION: site_partitions}
)


with warnings.catch_warnings():
    # Dagster marks this mapping beta and warns on every definitions load; TensorGuard pins
    # its Dagster version, and tests/asset_graph.py pins the edges the mapping draws.
    warnings.simplefilter("ignore", BetaWarning)
    ROUND_OF_SITE = MultiToSingleDimensionPartitionMapping(partition_dimension_name=ROUND_DIMENSION)
    """Maps a round × site partition to its round: the edges from per-round assets
    (round spec) to per-site assets and back."""


def round_site_key(round_key: str, site_id: str) -> MultiPartitionKey:
    """The multi-partition key of one site in one round."""
    return MultiPartitionKey({ROUND_DIMENSION: round_key, SITE_DIMENSION: site_id})


def split_round_site(partition_key: str | MultiPartitionKey) -> tuple[str, str]:
    """(round, site) of a round × site partition key."""
    if not isinstance(partition_key, MultiPartitionKey):
        raise TypeError(f"expected a round × site partition key, got {partition_key!r}")
    dims = partition_key.keys_by_dimension
    return dims[ROUND_DIMENSION], dims[SITE_DIMENSION]
