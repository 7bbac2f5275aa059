"""The ``tensorguard`` command: keys, packages and the edge agent, without Dagster.

Each area registers its own sub-commands and sets ``args.handler``; the handler's
return value is the process exit code (documented per area in ``tensorguard.cli_*``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from tensorguard.cli_agent import add_agent_commands
from tensorguard.cli_keys import add_keys_commands
from tensorguard.cli_tgsp import add_tgsp_commands


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every area's sub-commands."""
    parser = argparse.ArgumentParser(
        prog="tensorguard",
        description="TensorGuard: keys, signed and encrypted TGSP packages, edge agent.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_keys_commands(subparsers)
    add_tgsp_commands(subparsers)
    add_agent_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return its exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
