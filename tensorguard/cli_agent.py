"""``tensorguard agent run``: the edge agent on the command line (no Dagster needed).

Exit codes:

* 0: the agent stopped cleanly (``serve``), or with ``--once`` every release it handled
  was installed (or there was nothing new);
* 1: the agent could not run (configuration, keys, state, broker);
* 3: with ``--once``, at least one release was rejected or failed to install.

``--once`` prints each install report as one JSON line on stdout.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tensorguard.errors import TensorGuardError
from tensorguard.fleet.agent import EdgeAgent, run_once, serve
from tensorguard.fleet.agent_config import load_agent_config
from tensorguard.fleet.messages import InstallOutcome

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_INSTALLED = 3


def add_agent_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``agent run``; it sets ``args.handler`` (returns the exit code)."""
    agent = subparsers.add_parser(
        "agent",
        help="edge agent: receive, verify and install signed releases",
        description="See docs/FLEET.md for the agent configuration and the MQTT topics.",
    )
    commands = agent.add_subparsers(dest="agent_command", required=True)
    run = commands.add_parser("run", help="follow the configured channels and install new releases")
    run.add_argument("--config", type=Path, required=True, help="agent YAML configuration")
    run.add_argument(
        "--once",
        action="store_true",
        help="handle the channels' current releases, report, and exit (no long-running loop)",
    )
    run.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="with --once: seconds to wait for the channels' announcements (default 30)",
    )
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        agent = EdgeAgent.from_config(load_agent_config(args.config))
        if not args.once:
            serve(agent)
            return EXIT_OK
        reports = run_once(agent, timeout_s=args.timeout)
    except TensorGuardError as error:
        print(f"tensorguard agent: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    for report in reports:
        print(report.model_dump_json(), flush=True)
    if any(report.outcome is not InstallOutcome.INSTALLED for report in reports):
        return EXIT_NOT_INSTALLED
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``agent ...`` on its own (``python -m tensorguard.cli_agent agent run ...``)."""
    parser = argparse.ArgumentParser(prog="tensorguard")
    add_agent_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
