"""bench/bench_round.py's accounting: the overhead parts add up and nothing counts twice.

The benchmark itself is not a test (timings are reported, never asserted); these check
only its pure helpers, on hand-made reports.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_round.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_round", BENCH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _reports() -> tuple[dict[str, Any], dict[str, Any]]:
    core = {
        "process_seconds": 100.0,
        "startup_seconds": 10.0,
        "stage_seconds": {"setup_job": 30.0, "site_training_job": 50.0},
        "digests": {"base_model": "aa", "site_adapter[x]": "bb", "pruned_model": "dd"},
    }
    dagster = {
        "process_seconds": 130.0,
        "startup_seconds": 14.0,
        "federation_seconds": 0.5,
        "resolve_seconds": 1.5,
        "step_event_write_seconds": 3.0,
        "integrity_hash_seconds": 0.25,
        "round_seconds": 100.0,
        "event_writes": 100,
        "event_write_seconds": 9.0,
        "runs": [
            {
                "job": "setup_job",
                "wall_seconds": 36.0,
                "step_seconds": 33.0,
                "events": 20,
                "steps": 1,
            },
            {
                "job": "site_training_job",
                "wall_seconds": 30.0,
                "step_seconds": 27.0,
                "events": 40,
                "steps": 3,
            },
            {
                "job": "site_training_job",
                "wall_seconds": 30.0,
                "step_seconds": 28.0,
                "events": 40,
                "steps": 3,
            },
        ],
        "digests": {"base_model": "aa", "site_adapter[x]": "bc", "global_adapter": "cc"},
    }
    return core, dagster


def test_overhead_parts_add_up_without_counting_job_resolution_twice(bench: ModuleType) -> None:
    core, dagster = _reports()
    parts = bench.attribute_overhead(core, dagster)
    assert parts["total"] == pytest.approx(30.0)
    assert parts["imports"] == pytest.approx(4.0)
    # resolve_job_def runs inside each run's wall time: definitions, not run overhead
    assert parts["definitions_load"] == pytest.approx(2.0)
    assert parts["run_overhead"] == pytest.approx(96.0 - 1.5 - 88.0)
    assert parts["asset_layer"] == pytest.approx(88.0 - 80.0)
    named = sum(value for name, value in parts.items() if name != "total")
    assert named == pytest.approx(parts["total"])


def test_per_job_sums_runs_of_one_job(bench: ModuleType) -> None:
    core, dagster = _reports()
    rows = {row["job"]: row for row in bench.per_job(core, dagster)}
    training = rows["site_training_job"]
    assert training["runs"] == 2
    assert training["run_wall"] == pytest.approx(60.0)
    assert training["steps"] == pytest.approx(55.0)
    assert training["events"] == 80
    assert training["core"] == pytest.approx(50.0)


def test_digests_compared_only_where_both_recorded(bench: ModuleType) -> None:
    core, dagster = _reports()
    assert bench.compare_digests(core["digests"], dagster["digests"]) == {
        "base_model": True,
        "site_adapter[x]": False,
    }


def test_fastest_keeps_the_least_disturbed_run(bench: ModuleType) -> None:
    reports = [{"process_seconds": 12.0, "n": 1}, {"process_seconds": 9.5, "n": 2}]
    assert bench.fastest(reports)["n"] == 2


def test_measured_overhead_adds_the_measured_pieces(bench: ModuleType) -> None:
    core, dagster = _reports()
    parts = bench.measured_overhead(
        {**core, "import_seconds": 8.0}, {**dagster, "import_seconds": 11.0}
    )
    assert parts["imports"] == pytest.approx(3.0)
    assert parts["run_overhead"] == pytest.approx(3.0 + 3.0 + 2.0 - 1.5)
    assert parts["total"] == pytest.approx(3.0 + 2.0 + 6.5 + 3.0 + 0.25)
    assert parts["ratio"] == pytest.approx((88.0 + parts["total"]) / 88.0)


def test_report_summarises_and_prints(
    bench: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    core, dagster = _reports()
    startup = {"python": 0.1, "core": 8.0, "dagster": 11.0, "definitions": 12.0}
    report = bench.summarise(core, dagster, startup)
    assert report["ratio"] == pytest.approx(1.3)
    assert report["process_start"]["daemon_multiprocess_path_estimate_seconds"] == pytest.approx(
        12.0 * (3 + 7)
    )
    bench.print_report(report)
    assert "1/2 stage digests equal" in capsys.readouterr().out
