"""Rounds side by side, read from the Dagster instance's materialisations.

The evaluation report of a round shows where it stands against the earlier ones (held-out
loss of the base model, the global adapter and the pruned model per round), and the
round's per-site numbers as one metadata entry per site, so that Dagster's plots over
the round partitions draw one series per site instead of interleaving them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from dagster import AssetKey, AssetRecordsFilter, DagsterInstance

from tensorguard_assets.lineage import latest_materialization_record, recorded_metadata
from tensorguard_assets.partitions import round_site_key

COMPARED_LOSSES = {
    "base": "eval_loss_base",
    "global": "eval_loss_global",
    "pruned": "eval_loss_pruned",
}
"""Round-comparison column -> the evaluation report's metadata entry."""
HISTORY_SCAN = 500
"""How many of the newest evaluation_report materialisations are read."""


def round_comparison(
    instance: DagsterInstance,
    current_round: str,
    current: Mapping[str, float],
    *,
    rounds: int = 20,
) -> list[dict[str, Any]]:
    """One row per round (oldest first, at most ``rounds``, ending with the newest):
    ``round`` and the held-out losses of :data:`COMPARED_LOSSES`. Earlier rounds come
    from their latest ``evaluation_report`` materialisation, ``current_round`` from
    ``current`` (its losses under the same column names)."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("evaluation_report")), limit=HISTORY_SCAN
    ).records
    by_round: dict[str, dict[str, Any]] = {}
    for record in records:  # newest first: keep each round's latest
        materialization = record.asset_materialization
        partition = materialization.partition if materialization is not None else None
        if not partition or partition in by_round or partition == current_round:
            continue
        meta = recorded_metadata(record)
        by_round[partition] = {
            "round": partition,
            **{column: _number(meta.get(entry)) for column, entry in COMPARED_LOSSES.items()},
        }
    by_round[current_round] = {
        "round": current_round,
        **{column: _number(current.get(column)) for column in COMPARED_LOSSES},
    }
    ordered = [by_round[key] for key in sorted(by_round)]
    return ordered[-rounds:]


def site_metric(
    instance: DagsterInstance, round_key: str, site_ids: Iterable[str], asset: str, entry: str
) -> dict[str, float]:
    """``entry`` of each site's latest ``asset`` materialisation in the round (sites
    without one, or without a number there, are left out)."""
    values: dict[str, float] = {}
    for site_id in sorted(site_ids):
        record = latest_materialization_record(
            instance, asset, str(round_site_key(round_key, site_id))
        )
        value = _number(recorded_metadata(record).get(entry)) if record is not None else None
        if value is not None:
            values[site_id] = value
    return values


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
