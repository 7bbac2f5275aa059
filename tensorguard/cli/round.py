"""``tensorguard round start|status ROUND``: run a round on the daemon path.

``round start`` submits the round's first runs to the Dagster webserver through its
GraphQL API (``dagster_graphql.DagsterGraphQLClient``, a public Dagster API) and prints
each run id: with ``--setup`` first ``setup_job`` (coordinator) and ``key_ceremony_job``
(custodian), waiting until both succeed, then ``round_open_job`` for ROUND. The round's
sensors (``round_progress_sensor``, ``aggregation_sensor``, ``decryption_sensor``) launch
the rest: each site's training, aggregation, reveals, decryption and the release.

``round status`` reads the Dagster instance (``DAGSTER_HOME``, the daemon's) and prints
each stage's latest run of ROUND: job, partition, status and run id, in round order.

The Dagster half lives in the pipeline layer, :mod:`tensorguard_assets.round_control`,
which only these two handlers import, when they run: the core library never imports
Dagster, and the base CLI works without the pipeline extra.
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
from typing import TextIO

from tensorguard.cli.exit_codes import ExitCode, reporting_errors
from tensorguard.cli.round_reproduce import add_reproduce_command

WEBSERVER_ENV = "TG_DAGSTER_WEBSERVER"
DEFAULT_WEBSERVER = "http://127.0.0.1:3000"
PARTITION_TAG = "dagster/partition"
ROUND_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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


def _start(args: argparse.Namespace) -> int:
    from tensorguard_assets import round_control as control

    round_key = _check_round(args.round)
    url = args.webserver or os.environ.get(WEBSERVER_ENV) or DEFAULT_WEBSERVER
    client = control.connect(url)
    out: TextIO = sys.stdout
    launched: list[dict[str, str]] = []
    if args.setup:
        setup_runs = [(stage, control.submit(client, stage, url)) for stage in control.SETUP_STAGES]
        for stage, run_id in setup_runs:
            launched.append({"job": stage.job, "location": stage.location, "run_id": run_id})
            if not args.json:
                out.write(f"submitted {stage.job} ({stage.location}): run {run_id}\n")
                out.flush()
        for stage, run_id in setup_runs:
            control.wait(client, run_id, stage.job, args.setup_timeout)
    run_id = control.submit(client, control.OPEN_STAGE, url, {PARTITION_TAG: round_key})
    launched.append(
        {"job": control.OPEN_STAGE.job, "location": control.OPEN_STAGE.location, "run_id": run_id}
        | {"partition": round_key}
    )
    if args.json:
        out.write(json.dumps({"round": round_key, "runs": launched}, indent=2) + "\n")
    else:
        opening = control.OPEN_STAGE
        out.write(f"submitted {opening.job} ({opening.location}) {round_key}: run {run_id}\n")
        out.write(
            "the round sensors launch the rest (round_progress_sensor, aggregation_sensor, "
            f"decryption_sensor); follow it with: tensorguard round status {round_key}\n"
        )
    return ExitCode.OK


def _status(args: argparse.Namespace) -> int:
    from tensorguard.errors import ConfigurationError
    from tensorguard_assets.round_control import round_status

    round_key = _check_round(args.round)
    if not os.environ.get("DAGSTER_HOME"):
        raise ConfigurationError(
            "DAGSTER_HOME is not set: round status reads the Dagster instance the daemon "
            "uses; set DAGSTER_HOME to its directory (the one holding dagster.yaml)"
        )
    rows = round_status(round_key)
    if args.json:
        sys.stdout.write(json.dumps({"round": round_key, "stages": rows}, indent=2) + "\n")
        return ExitCode.OK
    for row in rows:
        partition = row["partition"] or "-"
        sys.stdout.write(
            f"{row['job']:<20} {partition:<32} {row['status']:<12} {row.get('run_id', '')}\n"
        )
    return ExitCode.OK
