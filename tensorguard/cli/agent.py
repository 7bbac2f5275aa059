"""``tensorguard agent run``: the edge agent on the command line (no Dagster needed).

Exit codes (:mod:`tensorguard.cli.exit_codes`): ``OK`` when the agent stopped cleanly
(``serve``), or with ``--once`` when every release it handled was installed (or there
was nothing new); ``NOT_INSTALLED`` with ``--once`` when at least one release was
rejected or failed to install; the code of the error when the agent could not run
(``CONFIG`` for its YAML, ``INPUT`` for its key or trust-store files, ``ERROR`` for
the broker or its state).

``--once`` prints each install report as one JSON line on stdout. The agent stack
(MQTT, pydantic, the package library) is imported by the handler, not by this module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorguard.cli.exit_codes import ExitCode, reporting_errors
from tensorguard.cli.identity import add_agent_enrol_command


def add_agent_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``agent run`` and ``agent enrol``; each sets ``args.handler`` (the exit code)."""
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
    run.set_defaults(handler=reporting_errors("agent", _run))
    add_agent_enrol_command(commands)


def _run(args: argparse.Namespace) -> int:
    import logging

    from tensorguard.fleet.agent import EdgeAgent, run_once, serve
    from tensorguard.fleet.agent_config import load_agent_config
    from tensorguard.fleet.messages import InstallOutcome

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    agent = EdgeAgent.from_config(load_agent_config(args.config))
    if not args.once:
        serve(agent)
        return ExitCode.OK
    reports = run_once(agent, timeout_s=args.timeout)
    for report in reports:
        print(report.model_dump_json(), flush=True)
    if any(report.outcome is not InstallOutcome.INSTALLED for report in reports):
        return ExitCode.NOT_INSTALLED
    return ExitCode.OK
