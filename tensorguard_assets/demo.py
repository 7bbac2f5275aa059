"""Run one full federated round on the local Dagster instance: ``make demo``.

It registers the sites as dynamic partitions, then launches the stages in order,
each as a recorded Dagster run of the code location of the party that owns it (visible
afterwards in the UI with ``make ui``): set-up (base model; the custodian's key
ceremony), the round's opening, each site's training and masked, encrypted update, the
aggregator's sum, the sites' seed reveals, the custodian's decryption, and the release.
Progress goes to the terminal; a failed stage stops the round with its reason.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from dagster import DagsterInstance, MultiPartitionKey

from tensorguard_assets.lineage import latest_materialization_record, recorded_metadata
from tensorguard_assets.locations import ROUND_RELEASE_JOBS, ROUND_SETUP_JOBS, Federation
from tensorguard_assets.partitions import round_partitions, round_site_key, site_partitions
from tensorguard_assets.release import DEMO_EDGE_NODE
from tensorguard_assets.resources import build_resources


def _run_job(
    federation: Federation,
    instance: DagsterInstance,
    job_name: str,
    partition_key: str | None,
    ops_config: dict[str, dict[str, object]] | None = None,
) -> bool:
    job = federation.resolve_job_def(job_name)
    label = f"{job_name}" + (f" [{partition_key}]" if partition_key else "")
    started = time.perf_counter()
    print(f"==> {label}", flush=True)
    result = job.execute_in_process(
        instance=instance,
        partition_key=partition_key,
        raise_on_error=False,
        run_config={
            "loggers": {"console": {"config": {"log_level": "INFO"}}},
            **({"ops": {op: {"config": c} for op, c in ops_config.items()}} if ops_config else {}),
        },
    )
    seconds = time.perf_counter() - started
    if result.success:
        print(f"    ok in {seconds:.1f}s (run {result.run_id})", flush=True)
        return True
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error is not None:
            print(f"    FAILED: {event.step_failure_data.error.message.strip()}", flush=True)
    print(f"    run {result.run_id} failed after {seconds:.1f}s", flush=True)
    return False


def run_round(
    instance: DagsterInstance,
    round_key: str,
    site_ids: Sequence[str],
    round_rules: dict[str, object] | None = None,
) -> bool:
    """Materialise the round's stages for ``site_ids``; True when all succeed.

    ``round_rules`` overrides fields of the round spec's config (e.g. ``clip_norm``,
    ``noise_multiplier`` for a DP round)."""
    assert site_partitions.name is not None
    instance.add_dynamic_partitions(site_partitions.name, list(site_ids))
    federation = Federation()
    if not all(_run_job(federation, instance, job, None) for job in ROUND_SETUP_JOBS):
        return False
    rules = {"round_spec": round_rules} if round_rules else None
    if not _run_job(federation, instance, "round_open_job", round_key, rules):
        return False
    for site_id in site_ids:
        key: MultiPartitionKey = round_site_key(round_key, site_id)
        if not _run_job(federation, instance, "site_training_job", key):
            return False
    return all(_run_job(federation, instance, job, round_key) for job in ROUND_RELEASE_JOBS)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tensorguard_assets.demo``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round", dest="round_key", help="round partition key (default: latest)")
    parser.add_argument("--site", action="append", help="site id (default: all registered)")
    parser.add_argument(
        "--noise-multiplier",
        type=float,
        default=0.0,
        help="distributed DP: central noise std / clip norm (0: no DP; see docs/FEDERATION.md)",
    )
    parser.add_argument("--clip-norm", type=float, help="the round's clip norm (a round rule)")
    args = parser.parse_args(argv)
    rules: dict[str, object] = {}
    if args.noise_multiplier:
        rules["noise_multiplier"] = args.noise_multiplier
    if args.clip_norm is not None:
        rules["clip_norm"] = args.clip_norm
    round_key: str | None = args.round_key or round_partitions.get_last_partition_key()
    if round_key is None:
        parser.error("no round partition exists yet; pass --round YYYY-MM-DD")
    sites = build_resources()["sites"].sites()
    site_ids = args.site or sorted(sites)
    started = time.perf_counter()
    print(f"TensorGuard round {round_key} with sites: {', '.join(site_ids)}", flush=True)
    instance = DagsterInstance.get()
    ok = run_round(instance, round_key, site_ids, rules or None)
    elapsed = time.perf_counter() - started
    if not ok:
        print(f"Round {round_key} FAILED after {elapsed:.1f}s", file=sys.stderr)
        return 1
    print(f"Round {round_key} complete in {elapsed:.1f}s.")
    print_release_summary(instance, round_key)
    return 0


def print_release_summary(instance: DagsterInstance, round_key: str) -> None:
    """Say where the round's release is and how to verify and install it."""
    record = latest_materialization_record(instance, "release", round_key)
    if record is None:
        return
    meta = recorded_metadata(record)
    artifacts = build_resources()["artifacts"].root
    node_dir = artifacts.parent / "edge" / DEMO_EDGE_NODE
    print(f"Release: {meta['channel']} v{meta['version']} at {meta['path']}")
    print(f"  sha256 {meta['digest']}")
    if node_dir.is_dir():
        print("Verify it (signature, pinned key, expiry):")
        print(
            f"  .venv/bin/tensorguard tgsp verify {meta['path']} --trust-store "
            f"{node_dir / 'trust-store.json'}"
        )
        print(f"Edge agent config for the demo node: {node_dir / 'agent.yaml'}")
    print("Inspect the round in the Dagster UI: make ui")


if __name__ == "__main__":
    sys.exit(main())
