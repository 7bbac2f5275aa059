"""``tensorguard audit verify``: check the identity audit log's signatures and hash chain.

Exit codes (:mod:`tensorguard.cli.exit_codes`): ``OK`` when every entry verifies (and,
with ``--expect-count``/``--expect-head``, the log ends where it was recorded to end);
``INTEGRITY`` when an entry was removed, reordered, altered, cut off or signed by
another key; ``INPUT`` when the public key file cannot be used. The identity modules are
imported by the handler.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tensorguard.cli.exit_codes import ExitCode, reporting_errors


def add_audit_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``audit verify``; it sets ``args.handler``."""
    audit = subparsers.add_parser(
        "audit",
        help="verify the identity audit log (signed, hash-chained)",
        description="See docs/IDENTITY.md, 'Audit log'.",
    )
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser("verify", help="check every entry, the chain and the head")
    verify.add_argument("--log", type=Path, required=True, help="the audit log (audit.jsonl)")
    verify.add_argument(
        "--public-key", type=Path, required=True, help="the audit key (audit-key.pub)"
    )
    verify.add_argument("--fingerprint", help="the audit key's fingerprint, pinned elsewhere")
    verify.add_argument("--expect-count", type=int, help="entry count recorded at a past check")
    verify.add_argument("--expect-head", help="head digest recorded with --expect-count")
    verify.set_defaults(handler=reporting_errors("audit verify", _verify))


def _verify(args: argparse.Namespace) -> int:
    from collections import Counter

    from tensorguard.identity.audit import AuditError, AuditLog
    from tensorguard.signed_log import LogHead
    from tensorguard.tgsp import load_verify_key

    key = load_verify_key(args.public_key)
    if args.fingerprint is not None and key.fingerprint() != args.fingerprint.lower():
        raise AuditError(
            f"{args.public_key} has fingerprint {key.fingerprint()}, not the pinned "
            f"{args.fingerprint}: the audit key was replaced"
        )
    if (args.expect_count is None) != (args.expect_head is None):
        raise AuditError("give --expect-count and --expect-head together")
    expected = (
        None if args.expect_count is None else LogHead(args.expect_count, args.expect_head.lower())
    )
    if not args.log.is_file():
        raise AuditError(f"audit log {args.log} does not exist")
    log = AuditLog(args.log, key)
    head = log.verify(expected)
    events = Counter(str(entry["event"]) for entry in log.entries())
    result = {
        "entries": head.count,
        "head": head.digest,
        "events": dict(sorted(events.items())),
        "key_fingerprint": key.fingerprint(),
    }
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    return ExitCode.OK
