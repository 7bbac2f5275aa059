"""Metadata the Dagster UI shows well: rounded numbers, tables, JSON and PNG plots.

Dagster plots every numeric metadata entry of an asset over its materialisations, with
an autoscaled axis: an unrounded float makes a change in the eighth digit look like a
drop. Floats are therefore recorded to :data:`SIGNIFICANT_DIGITS` significant digits
(artifacts such as ``evaluation_report.json`` keep full precision). Curves that a
number per materialisation cannot show (a loss per optimiser step) are drawn into a
PNG next to the artifact, whose path is recorded, and kept as JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dagster import MetadataValue, TableColumn, TableRecord, TableSchema

SIGNIFICANT_DIGITS = 4


def significant(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` rounded to ``digits`` significant digits (non-finite values unchanged)."""
    if not math.isfinite(value) or value == 0:
        return float(value)
    return float(f"{value:.{digits}g}")


def metadata_float(value: float, digits: int = SIGNIFICANT_DIGITS) -> MetadataValue[Any]:
    """A float metadata entry rounded to ``digits`` significant digits."""
    return MetadataValue.float(significant(float(value), digits))


def metadata_table(rows: Sequence[Mapping[str, Any]]) -> MetadataValue[Any]:
    """A table entry from rows of equal keys (missing cells empty); floats rounded."""
    if not rows:
        return MetadataValue.table(records=[], schema=TableSchema(columns=[]))
    columns = [  # the first row's keys, in order; typed by their first value that is set
        TableColumn(
            name, _column_type(next((r[name] for r in rows if r.get(name) is not None), None))
        )
        for name in rows[0]
    ]
    records = [TableRecord({name: _cell(row.get(name)) for name in rows[0]}) for row in rows]
    return MetadataValue.table(records=records, schema=TableSchema(columns=columns))


def _column_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def _cell(value: Any) -> str | int | float | bool | None:
    if isinstance(value, float):
        return significant(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def write_line_plot(
    path: Path,
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    x: Sequence[Any] | None = None,
) -> Path:
    """Draw each named series against ``x`` (default 1, 2, …) into a PNG at ``path``."""
    from matplotlib.figure import Figure  # only when drawing: keeps definitions loads fast

    figure = Figure(figsize=(6.4, 3.6), dpi=100)
    axes = figure.add_subplot()
    for name, values in series.items():
        xs = list(x) if x is not None else list(range(1, len(values) + 1))
        axes.plot(xs, list(values), marker="o" if len(values) <= 20 else None, label=name)
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(True, alpha=0.3)
    if len(series) > 1:
        axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
