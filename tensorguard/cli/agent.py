"""``tensorguard agent run``: the edge agent on the command line (no Dagster needed).

``tensorguard agent node-key --out FILE`` creates the node's request-signing key for the
fleet service (Ed25519, PKCS#8 PEM, 0600; never overwritten) and prints its public key,
hex, for the operator's enrolment (``POST /v1/nodes``); ``node_key_file`` in
``agent.yaml`` names the file.

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
    """Register ``agent run``, ``agent enrol`` and ``agent node-key``; each sets
    ``args.handler`` (the exit code)."""
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
    node_key = commands.add_parser(
        "node-key",
        help="create this node's fleet-service signing key; print its public key to enrol",
        description=(
            "Write a new Ed25519 key (PKCS#8 PEM, mode 0600) to --out, never replacing a "
            "file, and print its public key (64 hex characters) for POST /v1/nodes. Set "
            "node_key_file and service_url in agent.yaml. See docs/FLEET.md."
        ),
    )
    node_key.add_argument("--out", type=Path, required=True, help="the new key file")
    node_key.set_defaults(handler=reporting_errors("agent node-key", _node_key))


def _node_key(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tensorguard.service.node_key import write_node_key
    from tensorguard.service.request_signing import public_key_hex

    key = Ed25519PrivateKey.generate()
    write_node_key(args.out, key)
    print(public_key_hex(key.public_key()), flush=True)
    return ExitCode.OK


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
