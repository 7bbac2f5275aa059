"""``tensorguard round start|status ROUND``: run a round on the daemon path.

``round start`` submits the round's first runs to the Dagster webserver through its
GraphQL API (``dagster_graphql.DagsterGraphQLClient``, a public Dagster API) and prints
each run id: with ``--setup`` first ``setup_job`` (coordinator) and ``key_ceremony_job``
(custodian), waiting until both succeed, then ``round_open_job`` for ROUND. The round's
sensors (``round_progress_sensor``, ``aggregation_sensor``, ``decryption_sensor``) launch
the rest: each site's training, aggregation, reveals, decryption and the release.

``round status`` reads the Dagster instance (``DAGSTER_HOME``, the daemon's) and prints
each stage's latest run of ROUND: job, partition, status and run id, in round order.

Dagster is imported by the handlers only, so the base CLI works without it.
Exit codes (:mod:`tensorguard.cli.exit_codes`): ``OK``; ``CONFIG`` for a bad round id,
webserver URL or a missing ``DAGSTER_HOME``; ``ERROR`` when the webserver refuses a
submission, cannot be reached, or a setup run does not succeed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, TextIO

from tensorguard.cli.exit_codes import ExitCode, reporting_errors
from tensorguard.cli.round_reproduce import add_reproduce_command

WEBSERVER_ENV = "TG_DAGSTER_WEBSERVER"
DEFAULT_WEBSERVER = "http://127.0.0.1:3000"
PARTITION_TAG = "dagster/partition"
ROUND_DIMENSION_TAG = "dagster/partition/round"
ROUND_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


@dataclass(frozen=True)
class Stage:
    """One job of a round, the code location that runs it, and how it is partitioned."""

    job: str
    location: str
    partitioned: str  # "none", "round" or "round×site"


SETUP_STAGES = (
    Stage("setup_job", "tensorguard", "none"),
    Stage("key_ceremony_job", "tensorguard-custodian", "none"),
)
OPEN_STAGE = Stage("round_open_job", "tensorguard", "round")
ROUND_STAGES = (
    *SETUP_STAGES,
    OPEN_STAGE,
    Stage("site_training_job", "tensorguard", "round×site"),
    Stage("aggregation_job", "tensorguard-aggregator", "round"),
    Stage("reveal_job", "tensorguard", "round"),
    Stage("decryption_job", "tensorguard-custodian", "round"),
    Stage("round_release_job", "tensorguard", "round"),
)
"""Every stage of a round, in order (tensorguard_assets.jobs; a test checks the names
and locations against the code locations)."""


def add_round_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``round start`` and ``round status``; each sets ``args.handler``."""
    round_parser = subparsers.add_parser(
        "round",
        help="start a federated round on the Dagster daemon and follow its stages",
        description="The daemon path (docs/OPERATIONS.md): dagster-webserver and "
        "dagster-daemon serving workspace.yaml, the round sensors running.",
    )
    commands = round_parser.add_subparsers(dest="round_command", required=True)
    start = commands.add_parser(
        "start",
        help="submit the round's opening run (and, with --setup, the set-up runs first)",
    )
    start.add_argument("round", help="the round partition, e.g. 2026-11-23")
    start.add_argument(
        "--webserver",
        default=None,
        help=f"dagster-webserver URL (default: ${WEBSERVER_ENV} or {DEFAULT_WEBSERVER})",
    )
    start.add_argument(
        "--setup",
        action="store_true",
        help="first run setup_job and key_ceremony_job and wait until both succeed",
    )
    start.add_argument(
        "--setup-timeout",
        type=float,
        default=1800.0,
        help="seconds to wait for the set-up runs (1800)",
    )
    start.add_argument("--json", action="store_true", help="print JSON instead of text")
    start.set_defaults(handler=reporting_errors("round start", _start))

    status = commands.add_parser("status", help="print each stage's latest run of the round")
    status.add_argument("round", help="the round partition, e.g. 2026-11-23")
    status.add_argument("--json", action="store_true", help="print JSON instead of text")
    status.set_defaults(handler=reporting_errors("round status", _status))
    add_reproduce_command(commands)


def _check_round(round_key: str) -> str:
    from tensorguard.errors import ConfigurationError

    if not ROUND_PATTERN.fullmatch(round_key):
        raise ConfigurationError(
            f"round {round_key!r} is not a round partition key; use the round's date, "
            "YYYY-MM-DD (the UI's round partitions list them)"
        )
    return round_key


def _client(url: str) -> Any:
    from urllib.parse import urlsplit

    from dagster_graphql import DagsterGraphQLClient

    from tensorguard.errors import ConfigurationError

    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"webserver URL {url!r} is not http(s)://HOST[:PORT]; set --webserver or "
            f"{WEBSERVER_ENV}"
        )
    _require_reachable(url.rstrip("/"))
    return DagsterGraphQLClient(
        parts.hostname,
        port_number=parts.port,
        use_https=parts.scheme == "https",
        timeout=60,
    )


def _require_reachable(url: str) -> None:
    import urllib.error
    import urllib.request

    from tensorguard.errors import TensorGuardError

    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=10) as response:  # noqa: S310
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = type(exc).__name__
    raise TensorGuardError(
        f"cannot reach the Dagster webserver at {url} ({problem}); start "
        f"dagster-webserver -w workspace.yaml or set --webserver/{WEBSERVER_ENV}"
    )


def _submit(client: Any, stage: Stage, url: str, tags: dict[str, str] | None = None) -> str:
    from dagster_graphql import DagsterGraphQLClientError

    from tensorguard.errors import TensorGuardError

    try:
        return str(
            client.submit_job_execution(
                stage.job,
                repository_location_name=stage.location,
                repository_name="__repository__",
                tags=tags or {},
            )
        )
    except DagsterGraphQLClientError as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TensorGuardError(
            f"the Dagster webserver at {url} refused {stage.job} ({stage.location}): "
            f"{reason}; check that it serves workspace.yaml and that the job exists there"
        ) from None


def _wait(client: Any, run_id: str, job: str, timeout: float) -> str:
    from tensorguard.errors import TensorGuardError

    deadline = time.monotonic() + timeout
    while True:
        status = str(client.get_run_status(run_id).value)
        if status in TERMINAL:
            if status != "SUCCESS":
                raise TensorGuardError(
                    f"{job} run {run_id} ended {status}; open it in the UI (Runs) or "
                    f"`tensorguard round status` and fix it before starting the round"
                )
            return status
        if time.monotonic() > deadline:
            raise TensorGuardError(
                f"{job} run {run_id} is still {status} after {timeout:g}s; is dagster-daemon "
                "running (queued runs need it)?"
            )
        time.sleep(2)


def _start(args: argparse.Namespace) -> int:
    round_key = _check_round(args.round)
    url = args.webserver or os.environ.get(WEBSERVER_ENV) or DEFAULT_WEBSERVER
    client = _client(url)
    out: TextIO = sys.stdout
    launched: list[dict[str, str]] = []
    if args.setup:
        setup_runs = [(stage, _submit(client, stage, url)) for stage in SETUP_STAGES]
        for stage, run_id in setup_runs:
            launched.append({"job": stage.job, "location": stage.location, "run_id": run_id})
            if not args.json:
                out.write(f"submitted {stage.job} ({stage.location}): run {run_id}\n")
                out.flush()
        for stage, run_id in setup_runs:
            _wait(client, run_id, stage.job, args.setup_timeout)
    run_id = _submit(client, OPEN_STAGE, url, {PARTITION_TAG: round_key})
    launched.append(
        {"job": OPEN_STAGE.job, "location": OPEN_STAGE.location, "run_id": run_id}
        | {"partition": round_key}
    )
    if args.json:
        out.write(json.dumps({"round": round_key, "runs": launched}, indent=2) + "\n")
    else:
        out.write(f"submitted {OPEN_STAGE.job} ({OPEN_STAGE.location}) {round_key}: run {run_id}\n")
        out.write(
            "the round sensors launch the rest (round_progress_sensor, aggregation_sensor, "
            f"decryption_sensor); follow it with: tensorguard round status {round_key}\n"
        )
    return ExitCode.OK


def _round_of(tags: dict[str, str]) -> str | None:
    if ROUND_DIMENSION_TAG in tags:
        return tags[ROUND_DIMENSION_TAG]
    partition = tags.get(PARTITION_TAG)
    if partition is None:
        return None
    return partition.split("|")[0]


def stage_runs(instance: Any, round_key: str) -> list[dict[str, str]]:
    """Each stage's latest run of ``round_key`` (set-up stages: their latest run at all);
    a stage with none is listed as ``not started``. Site training: one row per site."""
    from dagster import RunsFilter

    rows: list[dict[str, str]] = []
    for stage in ROUND_STAGES:
        if stage.partitioned == "none":
            runs = instance.get_runs(RunsFilter(job_name=stage.job), limit=1)
        elif stage.partitioned == "round":
            runs = instance.get_runs(
                RunsFilter(job_name=stage.job, tags={PARTITION_TAG: round_key}), limit=1
            )
        else:
            latest: dict[str, Any] = {}
            for run in instance.get_runs(RunsFilter(job_name=stage.job), limit=1000):
                if _round_of(dict(run.tags)) == round_key:
                    latest.setdefault(run.tags.get(PARTITION_TAG, ""), run)  # newest first
            runs = [latest[key] for key in sorted(latest)]
        if not runs:
            rows.append({"job": stage.job, "partition": "", "status": "not started"})
            continue
        for run in runs:
            rows.append(
                {
                    "job": stage.job,
                    "partition": str(run.tags.get(PARTITION_TAG, "")),
                    "status": str(run.status.value),
                    "run_id": str(run.run_id),
                }
            )
    return rows


def _status(args: argparse.Namespace) -> int:
    from dagster import DagsterInstance

    from tensorguard.errors import ConfigurationError

    round_key = _check_round(args.round)
    if not os.environ.get("DAGSTER_HOME"):
        raise ConfigurationError(
            "DAGSTER_HOME is not set: round status reads the Dagster instance the daemon "
            "uses; set DAGSTER_HOME to its directory (the one holding dagster.yaml)"
        )
    with DagsterInstance.get() as instance:
        rows = stage_runs(instance, round_key)
    if args.json:
        sys.stdout.write(json.dumps({"round": round_key, "stages": rows}, indent=2) + "\n")
        return ExitCode.OK
    for row in rows:
        partition = row["partition"] or "-"
        sys.stdout.write(
            f"{row['job']:<20} {partition:<32} {row['status']:<12} {row.get('run_id', '')}\n"
        )
    return ExitCode.OK
