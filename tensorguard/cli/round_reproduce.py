"""``tensorguard round reproduce ROUND``: re-derive a finished round from its inputs.

Re-runs the round's deterministic stages (:mod:`tensorguard.reproduce`) in a scratch
directory and prints, per stage, the recorded and the reproduced digest; stages that
are random by design (encryption, signatures, the custodian's decryption) are listed as
"verified instead" with what was checked. The core module (torch, TenSEAL) is imported
by the handler only.

Exit codes (:mod:`tensorguard.cli.exit_codes`): ``OK`` when every stage is equal;
``INTEGRITY`` when one differs (stderr names the first diverging stage); ``INPUT`` when
a key file cannot be used; ``ERROR`` when a recorded input is missing (the message
names it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from tensorguard.cli.exit_codes import ExitCode, reporting_errors

if TYPE_CHECKING:
    from tensorguard.crypto import CompositeVerifyKey
    from tensorguard.reproduce import ReproductionReport

ARTIFACT_ROOT_ENV = "TG_ARTIFACT_ROOT"
DEFAULT_ARTIFACT_ROOT = ".tensorguard/artifacts"
SIGNING_KEY_SUFFIX = ".pub"
KEM_KEY_SUFFIX = ".kem.pub"


def add_reproduce_command(
    round_subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``round reproduce`` under the ``round`` group; sets ``args.handler``."""
    reproduce = round_subparsers.add_parser(
        "reproduce",
        help="re-run a finished round's deterministic stages and compare every digest",
        description="Reads the round's recorded inputs from the artifact store (base "
        "model, signed round spec, each site's data digest and training settings, the "
        "envelopes), re-runs the deterministic stages in a scratch directory and prints "
        "recorded vs reproduced digests. See docs/REPRODUCIBILITY.md.",
    )
    reproduce.add_argument("round", help="the round partition, e.g. 2026-11-23")
    reproduce.add_argument(
        "--artifact-root",
        type=Path,
        default=None,
        help=f"the artifact store (default: ${ARTIFACT_ROOT_ENV} or {DEFAULT_ARTIFACT_ROOT})",
    )
    reproduce.add_argument(
        "--base-model",
        type=Path,
        default=None,
        help="the base model directory, when it is not the artifact store's "
        "base_model/model; it must hash to the round spec's base_model_digest",
    )
    reproduce.add_argument(
        "--coordinator-key",
        type=Path,
        default=None,
        help="the coordinator's public key (default: the one published in the store)",
    )
    reproduce.add_argument(
        "--site-keys",
        type=Path,
        default=None,
        help="directory of the sites' public keys, <site>.pub (default: the store's "
        "site-public-keys/)",
    )
    reproduce.add_argument(
        "--custodian-key",
        type=Path,
        default=None,
        help="the custodian's public key: checks the decryption ledger's signatures",
    )
    reproduce.add_argument(
        "--scratch",
        type=Path,
        default=None,
        help="where to re-run the stages (default: a temporary directory, removed after)",
    )
    reproduce.add_argument("--seed", type=int, default=0, help="the run seed (TG_SEED, 0)")
    reproduce.add_argument("--json", action="store_true", help="print JSON instead of text")
    reproduce.set_defaults(handler=reporting_errors("round reproduce", _reproduce))


def _reproduce(args: argparse.Namespace) -> int:
    from tensorguard.reproduce import (
        DEVELOPMENT_COORDINATOR_KEY,
        DEVELOPMENT_SITE_KEYS,
        RoundRecord,
        reproduce_round,
    )
    from tensorguard.tgsp import load_verify_key

    root = (
        args.artifact_root or Path(os.environ.get(ARTIFACT_ROOT_ENV, DEFAULT_ARTIFACT_ROOT))
    ).resolve()
    record = RoundRecord(
        artifact_root=root,
        round_id=args.round,
        coordinator_key=load_verify_key(args.coordinator_key or root / DEVELOPMENT_COORDINATOR_KEY),
        site_keys=_site_keys(args.site_keys or root / DEVELOPMENT_SITE_KEYS),
        base_model_dir=args.base_model,
        custodian_key=load_verify_key(args.custodian_key) if args.custodian_key else None,
    )
    progress = None if args.json else (lambda line: print(f"  … {line}", file=sys.stderr))
    if args.scratch is not None:
        report = reproduce_round(record, args.scratch, seed=args.seed, progress=progress)
    else:
        with tempfile.TemporaryDirectory(prefix="tg-reproduce-") as scratch:
            report = reproduce_round(record, Path(scratch), seed=args.seed, progress=progress)
    _print(report, as_json=args.json)
    first = report.first_divergence
    if first is None:
        return ExitCode.OK
    print(
        f"tensorguard round reproduce: round {report.round_id} diverges first at stage "
        f"{first.stage} (recorded {first.recorded}, reproduced {first.reproduced})",
        file=sys.stderr,
    )
    return ExitCode.INTEGRITY


def _site_keys(directory: Path) -> dict[str, CompositeVerifyKey]:
    from tensorguard.tgsp import load_verify_key

    keys: dict[str, CompositeVerifyKey] = {}
    if directory.is_dir():
        for path in sorted(directory.glob(f"*{SIGNING_KEY_SUFFIX}")):
            if not path.name.endswith(KEM_KEY_SUFFIX):
                keys[path.name.removesuffix(SIGNING_KEY_SUFFIX)] = load_verify_key(path)
    return keys


def _print(report: ReproductionReport, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    print(f"round {report.round_id}")
    width = max(len(stage.stage) for stage in report.stages)
    for stage in report.stages:
        verdict = "equal" if stage.equal else "DIFFERENT"
        print(
            f"  {stage.stage:<{width}}  {stage.kind:<16}  {verdict:<9}  "
            f"recorded {stage.recorded[:24]:<24}  reproduced {stage.reproduced[:24]}"
        )
    first = report.first_divergence
    print("all stages equal" if first is None else f"first diverging stage: {first.stage}")
