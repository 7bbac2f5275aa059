"""Metadata the UI shows: rounded floats, typed tables, the round comparison."""

from __future__ import annotations

from pathlib import Path

from dagster import AssetMaterialization, DagsterInstance, MetadataValue, TableMetadataValue

from tensorguard_assets.metadata import metadata_table, significant, write_line_plot
from tensorguard_assets.round_history import round_comparison


def test_floats_keep_four_significant_digits() -> None:
    assert significant(1.0503494289630508) == 1.05
    assert significant(1.0500000500000) == 1.05  # a 5e-8 change is not a drop
    assert significant(0.000123456) == 0.0001235
    assert significant(12345.6) == 12350.0
    assert significant(0.0) == 0.0


def test_tables_are_typed_by_the_first_value_that_is_set() -> None:
    table = metadata_table(
        [
            {"round": "2026-11-01", "loss": None, "steps": 3},
            {"round": "2026-11-02", "loss": 1.23456, "steps": 4},
        ]
    )
    assert isinstance(table, TableMetadataValue)
    types = {column.name: column.type for column in table.schema.columns}
    assert types == {"round": "string", "loss": "float", "steps": "int"}
    assert table.records[1].data["loss"] == 1.235


def test_a_line_plot_is_a_png(tmp_path: Path) -> None:
    path = write_line_plot(
        tmp_path / "curve.png", {"loss": [3.0, 2.0, 1.5]}, title="t", xlabel="x", ylabel="y"
    )
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def _report(instance: DagsterInstance, round_key: str, base: float, global_: float) -> None:
    instance.report_runless_asset_event(
        AssetMaterialization(
            "evaluation_report",
            partition=round_key,
            metadata={
                "eval_loss_base": MetadataValue.float(base),
                "eval_loss_global": MetadataValue.float(global_),
            },
        )
    )


def test_the_round_comparison_lists_each_rounds_latest_report_in_order(
    sqlite_instance: DagsterInstance,
) -> None:
    _report(sqlite_instance, "2026-11-21", 2.0, 1.5)
    _report(sqlite_instance, "2026-11-20", 2.0, 1.9)
    _report(sqlite_instance, "2026-11-20", 2.0, 1.8)  # re-materialised: the latest counts
    _report(sqlite_instance, "2026-11-22", 9.0, 9.0)  # replaced by the current values
    rows = round_comparison(
        sqlite_instance, "2026-11-22", {"base": 2.0, "global": 1.2, "pruned": 1.3}
    )
    assert rows == [
        {"round": "2026-11-20", "base": 2.0, "global": 1.8, "pruned": None},
        {"round": "2026-11-21", "base": 2.0, "global": 1.5, "pruned": None},
        {"round": "2026-11-22", "base": 2.0, "global": 1.2, "pruned": 1.3},
    ]
    assert [
        row["round"] for row in round_comparison(sqlite_instance, "2026-11-22", {}, rounds=2)
    ] == ["2026-11-21", "2026-11-22"]
