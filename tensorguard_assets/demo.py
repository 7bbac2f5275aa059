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
import os
import sys
import time
from collections.abc import Sequence

from dagster import DagsterInstance, MultiPartitionKey

from tensorguard.production import env_flag
from tensorguard_assets.lineage import latest_materialization_record, recorded_metadata
from tensorguard_assets.locations import ROUND_RELEASE_JOBS, ROUND_SETUP_JOBS, Federation
from tensorguard_assets.partitions import round_partitions, round_site_key, site_partitions
from tensorguard_assets.release import DEMO_EDGE_NODE
from tensorguard_assets.resources import build_resources
from tensorguard_assets.run_report import failure_reasons, quiet_console_logger

TRACEBACK_ENV = "TG_DEBUG"
"""``TG_DEBUG=true`` prints Dagster's stack traces, as ``--traceback`` does."""


def run_stage(
    federation: Federation,
    instance: DagsterInstance,
    job_name: str,
    partition_key: str | None,
    ops_config: dict[str, dict[str, object]] | None = None,
) -> bool:
    """Run ``job_name`` (one stage of a round) and print its outcome; True on success.

    A failed run prints each reason once (a failed step or resource set-up, see
    :func:`tensorguard_assets.run_report.failure_reasons`); stack traces appear only when
    ``federation`` keeps Dagster's console logger (``--traceback``)."""
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
    for reason in failure_reasons(result):
        print("    FAILED at " + reason.replace("\n", "\n    "), flush=True)
    print(f"    run {result.run_id} failed after {seconds:.1f}s", flush=True)
    return False


DEFAULT_LOCAL_STEPS = 60
"""Optimiser steps per site for a one-round demo; R rounds split them (same compute)."""


def run_round(
    instance: DagsterInstance,
    round_key: str,
    site_ids: Sequence[str],
    round_rules: dict[str, object] | None = None,
    *,
    setup: bool = True,
    local_steps: int | None = None,
    traceback: bool = False,
) -> bool:
    """Materialise the round's stages for ``site_ids``; True when all succeed.

    ``round_rules`` overrides fields of the round spec's config (e.g. ``clip_norm``,
    ``noise_multiplier`` for a DP round); ``local_steps`` each site's optimiser steps;
    ``setup=False`` skips the base model and key ceremony (already run this session);
    ``traceback`` prints Dagster's stack traces of failed steps (otherwise each failure's
    reason is printed once, without them)."""
    assert site_partitions.name is not None
    instance.add_dynamic_partitions(site_partitions.name, list(site_ids))
    federation = Federation(loggers=None if traceback else {"console": quiet_console_logger})
    if setup and not all(run_stage(federation, instance, job, None) for job in ROUND_SETUP_JOBS):
        return False
    rules = {"round_spec": round_rules} if round_rules else None
    if not run_stage(federation, instance, "round_open_job", round_key, rules):
        return False
    training: dict[str, dict[str, object]] | None = (
        {"site_adapter": {"steps": local_steps}} if local_steps else None
    )
    for site_id in site_ids:
        key: MultiPartitionKey = round_site_key(round_key, site_id)
        if not run_stage(federation, instance, "site_training_job", key, training):
            return False
    return all(run_stage(federation, instance, job, round_key) for job in ROUND_RELEASE_JOBS)


def consecutive_rounds(last_round: str, count: int) -> list[str]:
    """The ``count`` round partitions ending at ``last_round``, oldest first."""
    keys = list(round_partitions.get_partition_keys())
    if last_round not in keys:
        raise ValueError(f"{last_round!r} is not a round partition")
    end = keys.index(last_round) + 1
    if count > end:
        raise ValueError(
            f"only {end} round partitions exist up to {last_round}; set TG_ROUND_START "
            f"earlier or ask for at most {end} rounds"
        )
    return keys[end - count : end]


def held_out_losses(instance: DagsterInstance, round_key: str) -> tuple[float, float] | None:
    """The round's held-out loss of the base model and of the global adapter."""
    record = latest_materialization_record(instance, "evaluation_report", round_key)
    if record is None:
        return None
    meta = recorded_metadata(record)
    return float(meta["eval_loss_base"]), float(meta["eval_loss_global"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m tensorguard_assets.demo``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--round", dest="round_key", help="round partition key (default: latest)")
    parser.add_argument("--site", action="append", help="site id (default: all registered)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run this many consecutive rounds ending at --round, each starting from the "
        "previous round's global adapter (default 1)",
    )
    parser.add_argument(
        "--local-steps",
        type=int,
        help=f"optimiser steps per site and round (default {DEFAULT_LOCAL_STEPS} / rounds, "
        "so the total compute does not depend on the number of rounds)",
    )
    parser.add_argument(
        "--noise-multiplier",
        type=float,
        default=0.0,
        help="distributed DP: central noise std / clip norm (0: no DP; see docs/FEDERATION.md)",
    )
    parser.add_argument("--clip-norm", type=float, help="the round's clip norm (a round rule)")
    parser.add_argument(
        "--traceback",
        action="store_true",
        help=f"print the stack traces of failed steps (also {TRACEBACK_ENV}=true); by default "
        "a failure prints its reason once",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rules: dict[str, object] = {}
    if args.noise_multiplier:
        rules["noise_multiplier"] = args.noise_multiplier
    if args.clip_norm is not None:
        rules["clip_norm"] = args.clip_norm
    last_round: str | None = args.round_key or round_partitions.get_last_partition_key()
    if last_round is None:
        parser.error("no round partition exists yet; pass --round YYYY-MM-DD")
    try:
        round_keys = consecutive_rounds(last_round, args.rounds)
    except ValueError as exc:
        parser.error(str(exc))
    # One round keeps site_adapter's own default; R rounds split it (same total compute).
    local_steps: int | None = args.local_steps or (
        -(-DEFAULT_LOCAL_STEPS // args.rounds) if args.rounds > 1 else None
    )
    # literal values (os.environ passed): these resources are read here, outside a run
    sites = build_resources(os.environ)["sites"].sites()
    site_ids = args.site or sorted(sites)
    started = time.perf_counter()
    label = round_keys[0] if len(round_keys) == 1 else f"{round_keys[0]} … {round_keys[-1]}"
    print(f"TensorGuard round {label} with sites: {', '.join(site_ids)}", flush=True)
    instance = DagsterInstance.get()
    losses: dict[str, tuple[float, float] | None] = {}
    for index, round_key in enumerate(round_keys):
        ok = run_round(
            instance,
            round_key,
            site_ids,
            rules or None,
            setup=index == 0,
            local_steps=local_steps,
            traceback=args.traceback or env_flag(TRACEBACK_ENV),
        )
        elapsed = time.perf_counter() - started
        if not ok:
            print(f"Round {round_key} FAILED after {elapsed:.1f}s", file=sys.stderr)
            if not (args.traceback or env_flag(TRACEBACK_ENV)):
                print("(--traceback or TG_DEBUG=true prints the stack traces)", file=sys.stderr)
            return 1
        losses[round_key] = held_out_losses(instance, round_key)
        print(f"Round {round_key} complete in {elapsed:.1f}s.", flush=True)
    if len(round_keys) > 1:
        print_loss_table(losses, local_steps or DEFAULT_LOCAL_STEPS)
    print_release_summary(instance, round_keys[-1])
    return 0


def print_loss_table(losses: dict[str, tuple[float, float] | None], local_steps: int) -> None:
    """Held-out loss of the global adapter after each round (base model for reference)."""
    print(f"Held-out loss per round ({local_steps} local steps per site and round):")
    for round_key, pair in losses.items():
        text = "not evaluated" if pair is None else f"global {pair[1]:.4f} (base {pair[0]:.4f})"
        print(f"  {round_key}: {text}")


def print_release_summary(instance: DagsterInstance, round_key: str) -> None:
    """Say where the round's release is and how to verify and install it."""
    record = latest_materialization_record(instance, "release", round_key)
    if record is None:
        return
    meta = recorded_metadata(record)
    artifacts = build_resources(os.environ)["artifacts"].root
    node_dir = artifacts.parent / "edge" / DEMO_EDGE_NODE
    print(f"Release: {meta['channel']} v{meta['version']} at {meta['path']}")
    if meta.get("archived"):
        print(
            f"  archived: round {round_key} is older than the round of {meta['channel']} "
            f"v{meta['channel_latest_version']}, which stays the channel's latest; not announced"
        )
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
