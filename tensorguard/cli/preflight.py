"""``tensorguard preflight [--party coordinator|aggregator|custodian|all]``.

Checks everything the party's runs need before any work starts and prints one line per
check, ``OK`` or ``FAIL`` with what to fix (:mod:`tensorguard.preflight`), then a
summary. Every problem is listed in one run; no secret value is printed.

Exit codes (:mod:`tensorguard.cli.exit_codes`): ``OK`` when every check passed,
``PREFLIGHT`` when at least one failed. The checks are imported by the handler, so
``tensorguard preflight --help`` loads none of them.
"""

from __future__ import annotations

import argparse
import sys

from tensorguard.cli.exit_codes import ExitCode, reporting_errors

PARTY_CHOICES = ("coordinator", "aggregator", "custodian", "all")


def add_preflight_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``preflight``; it sets ``args.handler``."""
    preflight = subparsers.add_parser(
        "preflight",
        help="check secrets, keys, sites, broker and databases; list every problem at once",
        description="Run the checks a party's pipeline runs need (TG_ENVIRONMENT, "
        "TG_KEY_*, TG_SITES_FILE, TG_MQTT_*, DATABASE_URL, DAGSTER_HOME); one OK/FAIL line "
        'per check with how to fix it. See docs/OPERATIONS.md, "Preflight".',
    )
    preflight.add_argument(
        "--party",
        choices=PARTY_CHOICES,
        default="all",
        help="whose code location to check: coordinator (tensorguard), aggregator, "
        "custodian, or all (default)",
    )
    preflight.set_defaults(handler=reporting_errors("preflight", _preflight))


def _preflight(args: argparse.Namespace) -> int:
    from tensorguard.preflight import parties_named, run_preflight

    report = run_preflight(parties_named(args.party))
    for check in report.checks:
        print(check.line())
    print(report.summary())
    if report.ok:
        return ExitCode.OK
    print(
        f"tensorguard preflight: {len(report.failures)} problem(s); fix the FAIL lines above",
        file=sys.stderr,
    )
    return ExitCode.PREFLIGHT
