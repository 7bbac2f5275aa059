"""Re-verify a round from the Dagster instance: ``python -m tensorguard_assets.check_round``.

For every asset of the definitions (unpartitioned ones, the round's, and each site's
round × site partition) it finds the latest materialisation on the instance in
``DAGSTER_HOME`` and

- requires the artifact the materialisation recorded (``path``) to lie under the artifact
  root being checked (``--artifact-root``, default ``TG_ARTIFACT_ROOT`` or
  ``.tensorguard/artifacts``): a path recorded under another root fails, naming the file
  and both roots, so the command never passes a round whose files it did not look at;
- re-reads that artifact, re-hashes it against the recorded ``digest``, and scans it for
  placeholder markers (:func:`verify_artifact`);
- reads the result of every asset check of that asset recorded for that very
  materialisation (:func:`latest_check_passed`); an older or missing result fails.

It prints the artifact root it checked and one row per asset and partition, and exits
1 if anything failed or was never materialised, 0 otherwise, and 2 when it cannot run
(no instance, no round). The TensorRT engine belongs to the GPU job: without a
materialisation it is reported as not built rather than failed. ``make check-round``
runs it on the ``make demo`` instance.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DagsterInstance,
    Definitions,
    build_asset_context,
)

from tensorguard.errors import TensorGuardError
from tensorguard_assets.artifact_checks import verify_artifact
from tensorguard_assets.lineage import (
    latest_check_passed,
    latest_materialization_record,
    recorded_metadata,
)
from tensorguard_assets.partitions import (
    round_partitions,
    round_site_key,
    round_site_partitions,
    site_partitions,
)
from tensorguard_assets.resources import artifact_root_setting
from tensorguard_resources.artifacts import local_artifact_root

# Assets built by another job on other hardware: missing is reported, not failed.
NOT_BUILT_HERE = {"tensorrt_engine": "gpu_export_job: needs TensorRT and a GPU"}
UNPARTITIONED = "-"
# Assets that no round materialises, and what does: check_round leaves them out.
NOT_ROUND_ASSETS = {
    "canary_rollout": "canary_rollout_sensor, from fleet telemetry after a release",
    "certificate_renewals": "certificate_renewal_job, on its own schedule",
    "certificate_inventory": "certificate_renewal_job, on its own schedule",
}
# Assets whose artifact lives outside the artifact store, and where it lives instead.
OUTSIDE_ARTIFACT_STORE = {"release": "the fleet registry (TG_REGISTRY_ROOT)"}


class Outcome(Enum):
    """What the verification of one asset partition concluded."""

    OK = "ok"
    FAILED = "FAILED"
    NOT_BUILT = "not built"


@dataclass(frozen=True)
class RowResult:
    """The verdict on one asset partition's latest materialisation."""

    asset: str
    partition: str
    outcome: Outcome
    run_id: str
    detail: str


class RoundCheckError(TensorGuardError):
    """The round cannot be checked at all (no round on the instance, bad round key)."""


def _partitions_of(
    definitions: Definitions, asset_key: AssetKey, round_key: str, site_ids: Sequence[str]
) -> list[str | None] | str:
    """The partition keys of ``asset_key`` in the round, or why they cannot be named."""
    partitions_def = definitions.resolve_asset_graph().get(asset_key).partitions_def
    if partitions_def is None:
        return [None]
    if partitions_def == round_partitions:
        return [round_key]
    if partitions_def == round_site_partitions:
        if not site_ids:
            return "no site is registered on this instance (see the site_registry_sensor)"
        return [round_site_key(round_key, site) for site in site_ids]
    return f"partitioned by {type(partitions_def).__name__}, which check_round does not know"


def _recorded_root(asset_name: str, path: Path) -> Path | None:
    """The artifact root a path was recorded under: the directory above ``<asset>/``."""
    parts = path.parts
    for index in range(len(parts) - 1, 0, -1):
        if parts[index] == asset_name:
            return Path(*parts[:index])
    return None


def _outside_root_problem(
    name: str, path: Path, metadata: dict[str, object], artifact_root: Path
) -> str | None:
    """Why ``path`` may not be verified under ``artifact_root``, or None when it may."""
    if name in OUTSIDE_ARTIFACT_STORE or metadata.get("built_locally") is False:
        return None
    if path.resolve().is_relative_to(artifact_root):
        return None
    recorded_root = _recorded_root(name, path)
    recorded = f"recorded under {recorded_root}" if recorded_root else "recorded elsewhere"
    return (
        f"recorded file {path} lies outside the artifact root being checked "
        f"{artifact_root} ({recorded}); check the root the round ran with "
        "(--artifact-root or TG_ARTIFACT_ROOT)"
    )


def _verify_partition(
    context: AssetExecutionContext,
    asset_key: AssetKey,
    check_names: Sequence[str],
    partition_key: str | None,
    artifact_root: Path,
) -> RowResult:
    """Re-verify the artifact and the recorded checks of one asset partition."""
    name = asset_key.to_user_string()
    label = UNPARTITIONED if partition_key is None else str(partition_key)
    record = latest_materialization_record(context.instance, asset_key, partition_key)
    if record is None:
        if name in NOT_BUILT_HERE:
            return RowResult(name, label, Outcome.NOT_BUILT, "", f"({NOT_BUILT_HERE[name]})")
        return RowResult(name, label, Outcome.FAILED, "", "never materialised")
    run_id = record.event_log_entry.run_id[:8]
    metadata = recorded_metadata(record)
    problems: list[str] = []
    if "path" not in metadata:
        problems.append("the materialisation recorded no artifact path")
    else:
        path = Path(str(metadata["path"]))
        outside = _outside_root_problem(name, path, dict(metadata), artifact_root)
        if outside is not None:
            problems.append(outside)
        else:
            verdict = verify_artifact(name, path, str(metadata.get("digest", "")))
            if not verdict.passed:
                problems.append(str(verdict.metadata["problems"].value))
    failed_checks = [
        check
        for check in check_names
        if not latest_check_passed(context, name, check, partition_key)
    ]
    if failed_checks:
        problems.append(
            "checks not passed on the latest materialisation: " + ", ".join(failed_checks)
        )
    if problems:
        return RowResult(name, label, Outcome.FAILED, run_id, "; ".join(problems))
    passed = ", ".join(check_names) or "none declared"
    return RowResult(
        name, label, Outcome.OK, run_id, f"artifact re-verified; checks passed: {passed}"
    )


def check_round(
    instance: DagsterInstance,
    definitions: Definitions,
    round_key: str,
    site_ids: Sequence[str],
    artifact_root: Path,
) -> list[RowResult]:
    """One verdict per asset partition of the round, in the graph's topological order;
    artifacts are verified only under ``artifact_root`` (an absolute directory)."""
    asset_graph = definitions.resolve_asset_graph()
    rows: list[RowResult] = []
    with build_asset_context(instance=instance) as context:
        for asset_key in asset_graph.toposorted_asset_keys:
            if asset_key.to_user_string() in NOT_ROUND_ASSETS:
                continue
            check_names = sorted(key.name for key in asset_graph.get(asset_key).check_keys)
            partitions = _partitions_of(definitions, asset_key, round_key, site_ids)
            if isinstance(partitions, str):
                name = asset_key.to_user_string()
                rows.append(RowResult(name, round_key, Outcome.FAILED, "", partitions))
                continue
            rows.extend(
                _verify_partition(context, asset_key, check_names, partition, artifact_root)
                for partition in partitions
            )
    return rows


def latest_round(instance: DagsterInstance, definitions: Definitions) -> str:
    """The newest round partition with any materialisation on the instance."""
    asset_graph = definitions.resolve_asset_graph()
    keys: set[str] = set()
    for asset_key in asset_graph.toposorted_asset_keys:
        if asset_graph.get(asset_key).partitions_def == round_partitions:
            keys |= instance.get_materialized_partitions(asset_key)
    if not keys:
        raise RoundCheckError(
            "no round has been materialised on this instance; run a round first "
            "(make demo) or pass --round YYYY-MM-DD"
        )
    return max(keys, key=lambda key: round_partitions.time_window_for_partition_key(key).start)


def format_rows(rows: Sequence[RowResult]) -> str:
    """The verdicts as an aligned plain-text table."""
    header = ("ASSET", "PARTITION", "RESULT", "RUN", "DETAIL")
    cells = [header] + [
        (row.asset, row.partition, row.outcome.value, row.run_id or "-", row.detail) for row in rows
    ]
    widths = [max(len(cell[i]) for cell in cells) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join(cell[i].ljust(widths[i]) for i in range(len(widths))) + "  " + cell[-1]
        for cell in cells
    )


def _summary(rows: Sequence[RowResult]) -> str:
    counts = {outcome: sum(row.outcome is outcome for row in rows) for outcome in Outcome}
    return (
        f"check-round: {counts[Outcome.OK]} ok, {counts[Outcome.FAILED]} failing, "
        f"{counts[Outcome.NOT_BUILT]} not built elsewhere"
    )


def _project_definitions() -> Definitions:
    """Every location's assets in one Definitions (imported late: it loads the whole graph)."""
    from tensorguard_assets.locations import all_in_one_definitions

    return all_in_one_definitions()


def main(argv: Sequence[str] | None = None, definitions: Definitions | None = None) -> int:
    """Entry point of ``python -m tensorguard_assets.check_round``; returns the exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--round", dest="round_key", help="round partition key (default: newest)")
    parser.add_argument(
        "--site", action="append", help="site id to check (default: every registered site)"
    )
    parser.add_argument(
        "--artifact-root",
        default=None,
        help="artifact root the round's files must lie under and are verified in "
        "(default: TG_ARTIFACT_ROOT, else .tensorguard/artifacts)",
    )
    args = parser.parse_args(argv)
    artifact_root = local_artifact_root(args.artifact_root or artifact_root_setting())
    if definitions is None:
        definitions = _project_definitions()
    if not os.environ.get("DAGSTER_HOME"):
        print(
            "check-round: DAGSTER_HOME is not set; point it at the instance that ran the round "
            "(make check-round uses .dagster, as make demo does)",
            file=sys.stderr,
        )
        return 2
    instance = DagsterInstance.get()
    try:
        round_key: str = args.round_key or latest_round(instance, definitions)
        if not round_partitions.has_partition_key(round_key):
            raise RoundCheckError(
                f"--round {round_key!r} is not a round partition of this deployment "
                "(a completed window since TG_ROUND_START, in the TG_ROUND_CADENCE format)"
            )
        assert site_partitions.name is not None
        site_ids = args.site or sorted(instance.get_dynamic_partitions(site_partitions.name))
        rows = check_round(instance, definitions, round_key, site_ids, artifact_root)
    except RoundCheckError as exc:
        print(f"check-round: {exc}", file=sys.stderr)
        return 2
    finally:
        instance.dispose()
    print(f"Round {round_key}, sites: {', '.join(site_ids) or 'none'}")
    print(f"Artifact root: {artifact_root}")
    print(format_rows(rows))
    print(_summary(rows))
    return 1 if any(row.outcome is Outcome.FAILED for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
