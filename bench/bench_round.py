"""What Dagster costs a round: the same round through the core library and through Dagster.

Runs one federated round twice, each in its own fresh process and state directory,
with the same demo data, seed, ``TG_DETERMINISTIC=true``, development mode and local
steps: once through the core library only (``bench/round_core.py``: the core functions
the assets call, no Dagster module imported) and once through the Dagster jobs
``make demo`` runs (``tensorguard_assets.demo.run_round``, each stage a recorded run on a
fresh SQLite instance). Prints the whole-process wall-time ratio (goal ≤ 1.3×) and where
the difference goes:

* imports: Python start-up and imports before the first stage (Dagster, the asset
  modules and their resources, against the core modules alone);
* definitions load: building the three code locations' ``Definitions`` and resolving
  each job (timed around ``Federation`` and ``resolve_job_def``);
* run overhead: each run's wall time in ``execute_in_process`` minus the summed wall
  time of its steps (run storage, planning, resource set-up, run start and end events),
  with the time spent storing events in the event log measured on its own;
* asset layer: the steps' summed time minus the core stages' time (re-hashing every
  upstream artifact and every output for the integrity checks, timed on its own,
  lineage reads, metadata);
* process start-up per run: ``make demo`` executes every run in its one process, so
  none; the daemon and ``dagster job execute`` start a process per run and, with the
  multiprocess executor, one per step. The cost of one such process (Python start-up
  plus loading ``tensorguard_assets.definitions``) is measured and multiplied out as an
  estimate for that path, reported apart from the ratio.

Digests of the seeded stages (base model, reference adapter, each site adapter, global
adapter, pruned model) are compared between the two runs: equal digests show it was the
same round. The machine is shared: repeat (``--repeat``) interleaves the two modes and
keeps each one's fastest.

Writes JSON (default ``bench/results/round.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ROUND_START = "2026-11-01"
ROUND_ID = "2026-11-02"
GOAL_RATIO = 1.3


# --- pure helpers (tested in tests/ops/test_bench_round.py) ----------------------------
def attribute_overhead(core: Mapping[str, Any], dagster: Mapping[str, Any]) -> dict[str, float]:
    """Split the Dagster process's extra wall time into its parts (seconds).

    ``core`` and ``dagster`` are the two children's reports with the driver's
    ``process_seconds``. The parts add up to ``total`` exactly: ``other`` is what no
    measurement covers (time between runs, partition registration, the demo's prints).
    """
    total = dagster["process_seconds"] - core["process_seconds"]
    imports = dagster["startup_seconds"] - core["startup_seconds"]
    # Jobs are resolved inside each run's wall time: counted as definitions, not runs.
    resolve = dagster["resolve_seconds"]
    definitions = dagster["federation_seconds"] + resolve
    run_walls = sum(run["wall_seconds"] for run in dagster["runs"])
    step_time = sum(run["step_seconds"] for run in dagster["runs"])
    run_overhead = run_walls - resolve - step_time
    asset_layer = step_time - sum(core["stage_seconds"].values())
    parts = {
        "imports": imports,
        "definitions_load": definitions,
        "run_overhead": run_overhead,
        "asset_layer": asset_layer,
    }
    parts["other"] = total - sum(parts.values())
    parts["total"] = total
    return parts


def per_job(core: Mapping[str, Any], dagster: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per job: core stage seconds, Dagster run wall and step seconds, events."""
    rows: dict[str, dict[str, Any]] = {}
    for run in dagster["runs"]:
        row = rows.setdefault(
            run["job"],
            {"job": run["job"], "runs": 0, "run_wall": 0.0, "steps": 0.0, "events": 0},
        )
        row["runs"] += 1
        row["run_wall"] += run["wall_seconds"]
        row["steps"] += run["step_seconds"]
        row["events"] += run["events"]
    for row in rows.values():
        row["core"] = float(core["stage_seconds"].get(row["job"], 0.0))
    return list(rows.values())


def compare_digests(core: Mapping[str, str], dagster: Mapping[str, str]) -> dict[str, bool]:
    """For every stage both runs recorded a digest of: equal or not."""
    return {name: core[name] == dagster[name] for name in sorted(core.keys() & dagster.keys())}


def measured_overhead(core: Mapping[str, Any], dagster: Mapping[str, Any]) -> dict[str, float]:
    """Dagster's cost measured piece by piece rather than as a difference of two noisy
    rounds: imports (the fastest of repeated fresh imports), definitions load, each
    run's time outside its steps, and inside steps the event-log writes and the asset
    layer's integrity re-hashing. ``ratio`` is (core round + these) / core round."""
    parts = {
        "imports": dagster["import_seconds"] - core["import_seconds"],
        "definitions_load": dagster["federation_seconds"] + dagster["resolve_seconds"],
        "run_overhead": sum(run["wall_seconds"] - run["step_seconds"] for run in dagster["runs"])
        - dagster["resolve_seconds"],
        "step_event_writes": dagster["step_event_write_seconds"],
        "integrity_hashing": dagster["integrity_hash_seconds"],
    }
    parts["total"] = sum(parts.values())
    baseline = core["import_seconds"] + sum(core["stage_seconds"].values())
    parts["ratio"] = (baseline + parts["total"]) / baseline
    return parts


def fastest(reports: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The report with the least whole-process time (the least disturbed by load)."""
    return min(reports, key=lambda report: float(report["process_seconds"]))


def format_table(rows: Sequence[tuple[str, str]]) -> str:
    """A two-column plain-text table, first column padded."""
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in rows)


# --- the children ------------------------------------------------------------------------
def _timed(record: list[float], function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            record.append(time.perf_counter() - started)

    return wrapper


def core_child(state: Path, steps: int, started: float) -> dict[str, Any]:
    """The round through the core library; run in its own process."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import round_core

    startup = time.perf_counter() - started
    report = dict(round_core.run_core_round(state, ROUND_ID, steps=steps))
    if report["dagster_imported"]:
        raise RuntimeError("the core round imported Dagster; it would not be a baseline")
    return {"startup_seconds": startup, **report}


def dagster_child(state: Path, steps: int, started: float) -> dict[str, Any]:
    """The round through the demo's Dagster jobs; run in its own process."""
    from dagster import AssetKey, DagsterInstance, MultiPartitionKey

    from tensorguard_assets import artifact_checks, demo, lineage
    from tensorguard_assets.locations import Federation
    from tensorguard_assets.resources import build_resources

    startup = time.perf_counter() - started
    if os.environ.get("TG_ARTIFACT_ROOT") != str(state / "artifacts"):
        raise RuntimeError("run the Dagster child through the driver (child_environ)")
    instance = DagsterInstance.get()
    storage = instance.event_log_storage
    event_writes: list[float] = []
    # Writes while a step runs (its logs, outputs, checks) fall inside the step's time:
    # from its STEP_START (stamped before it is written) to its STEP_SUCCESS or
    # STEP_FAILURE (stamped before it is written, so that write is outside).
    step_event_writes: list[float] = []
    in_step = [False]
    store_event = storage.store_event

    def timed_store(event: Any) -> None:
        kind = event.dagster_event.event_type_value if event.dagster_event else ""
        if kind == "STEP_START":
            in_step[0] = True
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            in_step[0] = False
        began = time.perf_counter()
        try:
            store_event(event)
        finally:
            seconds = time.perf_counter() - began
            event_writes.append(seconds)
            if in_step[0]:
                step_event_writes.append(seconds)

    storage.store_event = timed_store  # type: ignore[method-assign]
    hashing: list[float] = []
    lineage.sha256_path = _timed(hashing, lineage.sha256_path)  # type: ignore[attr-defined]
    artifact_checks.sha256_path = _timed(hashing, artifact_checks.sha256_path)  # type: ignore[attr-defined]
    artifact_checks.sha256_file = _timed(hashing, artifact_checks.sha256_file)  # type: ignore[attr-defined]
    federations: list[float] = []
    resolves: list[float] = []

    class TimedFederation(Federation):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            began = time.perf_counter()
            super().__init__(*args, **kwargs)
            federations.append(time.perf_counter() - began)

        def resolve_job_def(self, job_name: str) -> Any:
            began = time.perf_counter()
            try:
                return super().resolve_job_def(job_name)
            finally:
                resolves.append(time.perf_counter() - began)

    walls: list[tuple[str, float]] = []
    run_job = demo.run_stage

    def timed_run_job(federation: Any, inst: Any, job_name: str, *args: Any) -> bool:
        began = time.perf_counter()
        try:
            return bool(run_job(federation, inst, job_name, *args))
        finally:
            walls.append((job_name, time.perf_counter() - began))

    demo.Federation = TimedFederation  # type: ignore[attr-defined]
    demo.run_stage = timed_run_job  # type: ignore[assignment]
    site_ids = sorted(build_resources(os.environ)["sites"].sites())
    began = time.perf_counter()
    if not demo.run_round(instance, ROUND_ID, site_ids, None, setup=True, local_steps=steps):
        raise RuntimeError("the Dagster round failed; see the output above")
    round_seconds = time.perf_counter() - began
    writes_during_round = sum(event_writes)
    runs = []
    records = sorted(instance.get_run_records(), key=lambda record: record.create_timestamp)
    for (job_name, wall), record in zip(walls, records, strict=True):
        run_id = record.dagster_run.run_id
        step_stats = instance.get_run_step_stats(run_id)
        runs.append(
            {
                "job": job_name,
                "run_id": run_id,
                "wall_seconds": wall,
                "step_seconds": sum(
                    (stat.end_time or 0.0) - (stat.start_time or 0.0) for stat in step_stats
                ),
                "steps": len(step_stats),
                "events": len(instance.all_logs(run_id)),
            }
        )
        if record.dagster_run.job_name != job_name:
            raise RuntimeError(f"run order mismatch: {record.dagster_run.job_name} vs {job_name}")

    def digest(asset: str, field: str = "digest", partition: str | None = None) -> str:
        event = instance.get_latest_materialization_event(AssetKey(asset))
        if partition is not None:
            result = instance.fetch_materializations(AssetKey(asset), limit=100)
            for rec in result.records:
                mat = rec.asset_materialization
                if mat is not None and str(mat.partition) == partition:
                    return str(mat.metadata[field].value)
            return "missing"
        assert event is not None
        assert event.asset_materialization is not None
        return str(event.asset_materialization.metadata[field].value)

    digests = {
        "base_model": digest("base_model"),
        "round_spec reference": digest("round_spec", "reference_digest"),
        "global_adapter": digest("global_adapter"),
        "pruned_model": digest("pruned_model"),
    }
    for site_id in site_ids:
        key = str(MultiPartitionKey({"round": ROUND_ID, "site": site_id}))
        digests[f"site_adapter[{site_id}]"] = digest("site_adapter", partition=key)
    return {
        "startup_seconds": startup,
        "round_seconds": round_seconds,
        "federation_seconds": sum(federations),
        "resolve_seconds": sum(resolves),
        "event_write_seconds": writes_during_round,
        "event_writes": len(event_writes),
        "step_event_write_seconds": sum(step_event_writes),
        "integrity_hash_seconds": sum(hashing),
        "runs": runs,
        "digests": digests,
    }


# --- the driver ----------------------------------------------------------------------------
def child_environ(state: Path) -> dict[str, str]:
    """The environment both children run in: a fresh state, development, deterministic."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("TG_", "DAGSTER_")) and key != "DATABASE_URL"
    }
    dagster_home = state / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    env.update(
        DAGSTER_HOME=str(dagster_home),
        TG_ARTIFACT_ROOT=str(state / "artifacts"),
        TG_ROUND_START=ROUND_START,
        TG_DETERMINISTIC="true",
        TG_SEED="0",
        TG_ENVIRONMENT="development",
        PYTHONHASHSEED="0",
    )
    return env


def run_child(mode: str, steps: int, scratch: Path) -> dict[str, Any]:
    """Run one mode in a fresh process and state directory; its report plus the wall."""
    state = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=scratch))
    out = state / "report.json"
    command = [sys.executable, __file__, "--child", mode, "--state", str(state)]
    command += ["--steps", str(steps), "--out", str(out)]
    print(f"--> {mode} round ({steps} local steps per site) in {state}", flush=True)
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, env=child_environ(state), check=True)
    wall = time.perf_counter() - started
    report: dict[str, Any] = json.loads(out.read_text())
    report["process_seconds"] = wall
    print(f"    {mode}: {wall:.1f}s", flush=True)
    return report


def process_start_seconds(scratch: Path, repeat: int = 2) -> dict[str, float]:
    """Fastest wall time of a bare interpreter, of the core round's imports, of the Dagster
    round's imports, and of one loading the coordinator's code location (what a run
    worker or a multiprocess step process does before its work)."""
    state = Path(tempfile.mkdtemp(prefix="startup-", dir=scratch))
    env = child_environ(state)
    timings: dict[str, float] = {}
    bench_dir = Path(__file__).resolve().parent
    for label, code in (
        ("python", "pass"),
        ("core", f"import sys; sys.path.insert(0, {str(bench_dir)!r}); import round_core"),
        ("dagster", "import dagster, tensorguard_assets.demo"),
        ("definitions", "import tensorguard_assets.definitions"),
    ):
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)
            best = min(best, time.perf_counter() - started)
        timings[label] = best
    return timings


def summarise(
    core: Mapping[str, Any], dagster: Mapping[str, Any], startup: Mapping[str, float]
) -> dict[str, Any]:
    """The JSON report of the fastest pair."""
    parts = attribute_overhead(core, dagster)
    measured = measured_overhead(
        {**core, "import_seconds": startup["core"]},
        {**dagster, "import_seconds": startup["dagster"]},
    )
    runs = len(dagster["runs"])
    steps = sum(run["steps"] for run in dagster["runs"])
    per_process = startup["definitions"]
    return {
        "ratio": dagster["process_seconds"] / core["process_seconds"],
        "goal_ratio": GOAL_RATIO,
        "core_process_seconds": core["process_seconds"],
        "dagster_process_seconds": dagster["process_seconds"],
        "core_stage_seconds": sum(core["stage_seconds"].values()),
        "dagster_round_seconds": dagster["round_seconds"],
        "overhead_seconds": parts,
        "measured_overhead_seconds": measured,
        "measured_ratio": measured["ratio"],
        "event_log": {
            "events": sum(run["events"] for run in dagster["runs"]),
            "store_calls": dagster["event_writes"],
            "store_seconds": dagster["event_write_seconds"],
            "store_seconds_inside_steps": dagster["step_event_write_seconds"],
            "store_ms_per_call": 1000
            * dagster["event_write_seconds"]
            / max(dagster["event_writes"], 1),
        },
        "integrity_hash_seconds": dagster["integrity_hash_seconds"],
        "runs": runs,
        "steps": steps,
        "per_job": per_job(core, dagster),
        "process_start": {
            "python_seconds": startup["python"],
            "core_imports_seconds": startup["core"],
            "dagster_imports_seconds": startup["dagster"],
            "python_and_definitions_seconds": per_process,
            "demo_path_processes": 0,
            "daemon_multiprocess_path_estimate_seconds": per_process * (runs + steps),
        },
        "digests_equal": compare_digests(core["digests"], dagster["digests"]),
    }


def print_report(report: Mapping[str, Any]) -> None:
    """The short table on stdout."""
    parts = report["overhead_seconds"]
    log = report["event_log"]
    start = report["process_start"]
    measured = report["measured_overhead_seconds"]
    pairs = ", ".join(f"{ratio:.2f}x" for ratio in report.get("pair_ratios", []))
    rows = [
        ("core round (process)", f"{report['core_process_seconds']:.1f} s"),
        ("dagster round (process)", f"{report['dagster_process_seconds']:.1f} s"),
        ("ratio, fastest of each", f"{report['ratio']:.2f}x (goal <= {GOAL_RATIO}x)"),
        ("ratio, each pair", pairs or "-"),
        (
            "difference",
            f"{parts['total']:+.1f} s = imports {parts['imports']:+.1f}"
            f" + definitions {parts['definitions_load']:+.1f} + runs {parts['run_overhead']:+.1f}"
            f" + steps {parts['asset_layer']:+.1f} + other {parts['other']:+.1f}",
        ),
        ("measured overhead", f"{measured['total']:.1f} s -> ratio {measured['ratio']:.2f}x"),
        ("  imports", f"{measured['imports']:+.1f} s (fastest fresh import, each mode)"),
        ("  definitions load", f"{measured['definitions_load']:+.1f} s"),
        (
            "  runs outside steps",
            f"{measured['run_overhead']:+.1f} s over {report['runs']} runs",
        ),
        ("  event writes in steps", f"{measured['step_event_writes']:+.1f} s"),
        ("  integrity re-hashing", f"{measured['integrity_hashing']:+.1f} s"),
        (
            "event log",
            f"{log['events']} events, {log['store_calls']} writes, {log['store_seconds']:.1f} s"
            f" ({log['store_ms_per_call']:.0f} ms each; {log['store_seconds_inside_steps']:.1f}"
            " s inside steps)",
        ),
        ("process start-up per run", "none in make demo (every run in one process)"),
        (
            "  one process + definitions",
            f"{start['python_and_definitions_seconds']:.2f} s (bare python "
            f"{start['python_seconds']:.2f} s); x {report['runs']} runs + "
            f"{report['steps']} steps = {start['daemon_multiprocess_path_estimate_seconds']:.0f}"
            " s on the daemon path (estimate)",
        ),
    ]
    print(format_table(rows))
    print(f"{'job':<20} {'runs':>4} {'core s':>8} {'run s':>8} {'steps s':>8} {'events':>7}")
    for row in report["per_job"]:
        print(
            f"{row['job']:<20} {row['runs']:>4} {row['core']:>8.1f} {row['run_wall']:>8.1f} "
            f"{row['steps']:>8.1f} {row['events']:>7}"
        )
    equal = report["digests_equal"]
    print(f"same round: {sum(equal.values())}/{len(equal)} stage digests equal")


def main() -> None:
    """Entry point."""
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60, help="local steps per site (demo: 60)")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per mode, interleaved")
    parser.add_argument("--out", type=Path, default=Path("bench/results/round.json"))
    parser.add_argument("--scratch", type=Path, help="keep the state directories here")
    parser.add_argument("--child", choices=("core", "dagster"), help=argparse.SUPPRESS)
    parser.add_argument("--state", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child = core_child if args.child == "core" else dagster_child
        report = child(args.state, args.steps, started)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        return
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="bench-round-"))
    scratch.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()
    cores: list[dict[str, Any]] = []
    dagsters: list[dict[str, Any]] = []
    for _ in range(args.repeat):
        cores.append(run_child("core", args.steps, scratch))
        dagsters.append(run_child("dagster", args.steps, scratch))
    startup = process_start_seconds(scratch)
    report = summarise(fastest(cores), fastest(dagsters), startup)
    report.update(
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": {
                "python": platform.python_version(),
                "processor": platform.machine(),
                "cores": os.cpu_count(),
                "load_average_before": [round(value, 2) for value in load],
                "load_average_after": [round(value, 2) for value in os.getloadavg()],
            },
            "local_steps": args.steps,
            "repeat": args.repeat,
            "all_process_seconds": {
                "core": [r["process_seconds"] for r in cores],
                "dagster": [r["process_seconds"] for r in dagsters],
            },
            "pair_ratios": [
                d["process_seconds"] / c["process_seconds"]
                for c, d in zip(cores, dagsters, strict=True)
            ],
        }
    )
    print_report(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.scratch:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
