"""The ``tensorguard`` command: keys, packages and the edge agent, without Dagster.

One sub-command module per area (:mod:`.keys`, :mod:`.tgsp`, :mod:`.agent`,
:mod:`.serve`, :mod:`.preflight`, :mod:`.trust_store`, :mod:`.identity`, :mod:`.audit`,
:mod:`.fleet`, :mod:`.round`); each
registers its commands and sets ``args.handler``, whose return value is the process
exit code from the one table in :mod:`tensorguard.cli.exit_codes`. Building the
parser imports only the standard library: each handler imports what it needs, so
``tensorguard <command> --help`` stays fast and works on an edge node without the
training or pipeline extras. See docs/CLI.md.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tensorguard.cli.agent import add_agent_commands
from tensorguard.cli.audit import add_audit_commands
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.cli.fleet import add_fleet_commands
from tensorguard.cli.identity import add_identity_commands
from tensorguard.cli.keys import add_keys_commands
from tensorguard.cli.preflight import add_preflight_commands
from tensorguard.cli.round import add_round_commands
from tensorguard.cli.serve import add_serve_commands
from tensorguard.cli.tgsp import add_tgsp_commands
from tensorguard.cli.trust_store import add_trust_store_commands

__all__ = ["ExitCode", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every area's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="tensorguard",
        description="TensorGuard: keys, signed and encrypted TGSP packages, edge agent, "
        "fleet service.",
        epilog="Exit codes: see docs/CLI.md (tensorguard.cli.exit_codes.ExitCode).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_keys_commands(subparsers)
    add_tgsp_commands(subparsers)
    add_trust_store_commands(subparsers)
    add_agent_commands(subparsers)
    add_serve_commands(subparsers)
    add_identity_commands(subparsers)
    add_audit_commands(subparsers)
    add_preflight_commands(subparsers)
    add_fleet_commands(subparsers)
    add_round_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code (argparse exits 2 on usage errors)."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return int(code)
