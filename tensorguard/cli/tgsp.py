"""``tensorguard tgsp``: build, inspect, verify and open TGSP v3 packages.

Commands::

    tensorguard tgsp build SOURCE -o PACKAGE --signing-key KEY --recipient PUB [...]
                           --channel CH --version N --model-name NAME [options]
    tensorguard tgsp inspect PACKAGE [--json]
    tensorguard tgsp verify PACKAGE --trust-store FILE [--channel CH]
                            [--high-water-mark CH=N[:SHA256] ... | --high-water-store FILE]
                            [--json]
    tensorguard tgsp open PACKAGE -d DEST --recipient-key KEY --trust-store FILE
                          [--channel CH]
                          [--high-water-mark CH=N[:SHA256] ... | --high-water-store FILE]

Rollback protection follows the one rule of :mod:`tensorguard.tgsp._rollback`: a package
must be above the channel's mark, or be the very package the mark names (``:SHA256``).
A ``--high-water-mark`` must name the package's channel. ``--high-water-store`` reads the
node's persistent marks, and ``open`` raises the mark after a successful open.

Key and trust-store files use the formats in :mod:`tensorguard.tgsp._keyfiles` and
:mod:`tensorguard.tgsp._trust`; loading goes through :func:`load_signer`,
:func:`load_recipient_public_keys`, :func:`load_recipient_private_key` and
:func:`load_trust_store`, so another key source can replace them.

Exit codes: :mod:`tensorguard.cli.exit_codes` (``INPUT`` and ``CONFIG`` through
``EXTRACTION``). The package library is imported by the handlers, not by this module,
so ``tensorguard tgsp ... --help`` loads no cryptography.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tensorguard.cli.exit_codes import ExitCode, reporting_errors
from tensorguard.errors import ConfigurationError

if TYPE_CHECKING:
    from tensorguard.crypto import CompositeSigner, XWingPrivateKey, XWingPublicKey
    from tensorguard.tgsp import (
        HighWaterMark,
        ModelIdentity,
        PackageHeader,
        ReleaseInfo,
        TrustStore,
        VerificationPolicy,
    )

SECONDS_PER_DAY = 86_400
# Shown in --help only; the value used is tensorguard.tgsp._format.DEFAULT_CHUNK_SIZE
# (tests/cli checks that the two agree).
CHUNK_SIZE_HELP = "bytes per encrypted chunk (default: 1048576)"


# --- key loading (swap these to use another key source) ---------------------------------


def load_signer(path: Path) -> CompositeSigner:
    """Return the package signer stored at ``path``."""
    from tensorguard.tgsp import load_signing_key

    return load_signing_key(path)


def load_recipient_public_keys(paths: Sequence[Path]) -> list[XWingPublicKey]:
    """Return the recipients' X-Wing public keys."""
    from tensorguard.tgsp import load_recipient_public_key

    return [load_recipient_public_key(path) for path in paths]


def load_recipient_private_key(path: Path) -> XWingPrivateKey:
    """Return this machine's X-Wing private key."""
    from tensorguard.tgsp import load_recipient_private_key

    return load_recipient_private_key(path)


def load_trust_store(path: Path) -> TrustStore:
    """Return the pinned producer keys."""
    from tensorguard.tgsp import TrustStore

    return TrustStore.load(path)


# --- packages from a pipe ----------------------------------------------------------------

STDIN_PACKAGE = "-"
_SPOOL_CHUNK = 1024 * 1024


@contextlib.contextmanager
def package_file(given: Path) -> Iterator[Path]:
    """Yield a regular file holding the package named ``given``.

    ``-`` (standard input) and pipes or FIFOs (``<(curl ...)``) are copied, in constant
    memory, into a private temporary file (0600) that is removed afterwards: verification
    reads the payload once for its digest and ``open`` again to decrypt, so the package
    must be seekable. A regular file is used in place.
    """
    if str(given) != STDIN_PACKAGE:
        try:
            regular = stat.S_ISREG(given.stat().st_mode)
        except OSError:
            regular = True  # let the library report the unreadable path
        if regular:
            yield given
            return
    from tensorguard.tgsp import PackageUnreadableError

    descriptor, name = tempfile.mkstemp(prefix="tensorguard-package-", suffix=".tgsp")
    spool = Path(name)
    try:
        try:
            with os.fdopen(descriptor, "wb") as sink:
                if str(given) == STDIN_PACKAGE:
                    shutil.copyfileobj(sys.stdin.buffer, sink, _SPOOL_CHUNK)
                else:
                    with given.open("rb") as source:
                        shutil.copyfileobj(source, sink, _SPOOL_CHUNK)
        except OSError as exc:
            raise PackageUnreadableError(
                f"cannot copy the package from {given} into a temporary file: "
                f"{exc.strerror or exc}; free space in {tempfile.gettempdir()} or set TMPDIR"
            ) from exc
        yield spool
    finally:
        spool.unlink(missing_ok=True)


# --- argument helpers --------------------------------------------------------------------


def _high_water_mark(text: str) -> tuple[str, HighWaterMark]:
    from tensorguard.tgsp import HighWaterMark, validate_channel

    channel, separator, value = text.partition("=")
    version, _, digest = value.partition(":")
    if not separator or not channel or not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected CHANNEL=VERSION[:SHA256], got {text!r}")
    try:
        return validate_channel(channel), HighWaterMark(int(version), digest or None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _annotation(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _policy(args: argparse.Namespace) -> VerificationPolicy:
    from tensorguard.tgsp import HighWaterStore, VerificationPolicy

    if args.high_water_store is not None:
        return VerificationPolicy(
            expected_channel=args.channel,
            high_water_marks=HighWaterStore(args.high_water_store).load(),
        )
    marks = dict(args.high_water_mark or [])
    if len(marks) != len(args.high_water_mark or []):
        raise ConfigurationError("give at most one --high-water-mark per channel")
    return VerificationPolicy(
        expected_channel=args.channel, high_water_marks=marks, marks_name_the_channel=True
    )


def _summary(header: PackageHeader) -> list[str]:
    release = header.release
    lines = [
        f"package     {header.package_id}",
        f"producer    {header.producer_key_id}",
        f"channel     {release.channel}  version {release.version}",
        f"model       {release.model.name}  sha256 {release.model.digest}",
    ]
    if release.base_model is not None:
        lines.append(f"base model  {release.base_model.name}  sha256 {release.base_model.digest}")
    if release.round_id is not None:
        lines.append(f"round       {release.round_id}")
    if release.gate_decision_digest is not None:
        lines.append(f"gate        sha256 {release.gate_decision_digest}")
    created, expires = (
        datetime.fromtimestamp(moment, UTC).isoformat()
        for moment in (release.created_at, release.expires_at)
    )
    lines += [
        f"created     {created}  expires {expires}",
        f"recipients  {len(header.recipients)}",
        f"files       {len(header.files)}  ({header.total_size} bytes)",
    ]
    lines += [f"  {entry.sha256}  {entry.size:>12}  {entry.path}" for entry in header.files]
    return lines


def _print_header(header: PackageHeader, as_json: bool, status: str) -> None:
    if as_json:
        print(json.dumps({"status": status, "header": header.to_json()}, indent=2, sort_keys=True))
    else:
        print(f"status      {status}")
        print("\n".join(_summary(header)))


# --- command handlers --------------------------------------------------------------------


def _model_digest(source: Path, given: str | None) -> str:
    from tensorguard.digest import sha256_path
    from tensorguard.tgsp import DEFAULT_LIMITS, collect_source_files

    if given is not None:
        return given
    collect_source_files(source, DEFAULT_LIMITS)  # refuse links, devices, bad names first
    return sha256_path(source)


def _optional_identity(name: str | None, digest: str | None, what: str) -> ModelIdentity | None:
    from tensorguard.tgsp import ModelIdentity

    if name is None and digest is None:
        return None
    if name is None or digest is None:
        raise ConfigurationError(f"give both --{what}-name and --{what}-digest, or neither")
    return ModelIdentity(name, digest)


def _run_build(args: argparse.Namespace) -> int:
    from tensorguard.tgsp import DEFAULT_CHUNK_SIZE, HeaderSchemaError, build_package

    created_at = int(time.time())
    expires_at = (
        args.expires_at
        if args.expires_at is not None
        else created_at + args.expires_in_days * SECONDS_PER_DAY
    )
    try:
        release = _release_from_args(args, created_at, expires_at)
    except HeaderSchemaError as exc:
        raise ConfigurationError(f"invalid release metadata: {exc}") from exc
    result = build_package(
        args.source,
        args.output,
        signer=load_signer(args.signing_key),
        recipients=load_recipient_public_keys(args.recipient),
        release=release,
        chunk_size=DEFAULT_CHUNK_SIZE if args.chunk_size is None else args.chunk_size,
    )
    print(
        f"built {result.path} ({result.package_size} bytes, {len(result.header.files)} files, "
        f"{len(result.header.recipients)} recipients, package {result.header.package_id})"
    )
    return ExitCode.OK


def _release_from_args(args: argparse.Namespace, created_at: int, expires_at: int) -> ReleaseInfo:
    from tensorguard.tgsp import ModelIdentity, ReleaseInfo

    return ReleaseInfo(
        channel=args.channel,
        version=args.version,
        created_at=created_at,
        expires_at=expires_at,
        model=ModelIdentity(args.model_name, _model_digest(args.source, args.model_digest)),
        base_model=_optional_identity(args.base_model_name, args.base_model_digest, "base-model"),
        round_id=args.round,
        gate_decision_digest=args.gate_decision_digest,
        annotations=dict(args.annotation or []),
    )


def _run_inspect(args: argparse.Namespace) -> int:
    from tensorguard.tgsp import inspect_package

    with package_file(args.package) as package:
        inspected = inspect_package(package)
    print("warning: inspect does not verify the signature; use `tgsp verify`", file=sys.stderr)
    _print_header(inspected.header, args.json, "UNVERIFIED")
    return ExitCode.OK


def _run_verify(args: argparse.Namespace) -> int:
    from tensorguard.tgsp import verify_package

    trust_store, policy = load_trust_store(args.trust_store), _policy(args)
    with package_file(args.package) as package:
        verified = verify_package(package, trust_store, policy)
    _print_header(verified.header, args.json, "VERIFIED")
    return ExitCode.OK


def _run_open(args: argparse.Namespace) -> int:
    from tensorguard.digest import sha256_file
    from tensorguard.tgsp import HighWaterMark, HighWaterStore, open_package

    recipient_key = load_recipient_private_key(args.recipient_key)
    trust_store, policy = load_trust_store(args.trust_store), _policy(args)
    with package_file(args.package) as package:
        opened = open_package(
            package,
            args.destination,
            recipient_key=recipient_key,
            trust_store=trust_store,
            policy=policy,
            readable_by_all=args.readable_by_all,
        )
        release = opened.header.release
        recorded = "record it as the new high-water mark"
        if args.high_water_store is not None:
            mark = HighWaterMark(release.version, sha256_file(package))
            HighWaterStore(args.high_water_store).record(release.channel, mark)
            recorded = f"high-water mark raised in {args.high_water_store}"
    print(
        f"opened {args.package} into {opened.destination}: {len(opened.header.files)} files "
        f"verified; channel {release.channel} version {release.version} ({recorded})"
    )
    return ExitCode.OK


# --- parser ------------------------------------------------------------------------------


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-store", type=Path, required=True, help="pinned producer keys")
    parser.add_argument("--channel", help="refuse packages released on another channel")
    marks = parser.add_mutually_exclusive_group()
    marks.add_argument(
        "--high-water-mark",
        type=_high_water_mark,
        action="append",
        metavar="CHANNEL=VERSION[:SHA256]",
        help="the version installed last on the package's CHANNEL (rollback protection): "
        "accept only higher versions, or VERSION itself when the package file's SHA-256 "
        "is SHA256; a mark for another channel is refused",
    )
    marks.add_argument(
        "--high-water-store",
        type=Path,
        metavar="FILE",
        help="the node's persistent high-water marks (JSON, 0600); `open` raises the "
        "channel's mark after a successful open",
    )


def add_tgsp_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``tgsp build|inspect|verify|open``; each sets ``handler(args) -> exit code``."""
    tgsp = subparsers.add_parser("tgsp", help="build, inspect, verify and open TGSP packages")
    commands = tgsp.add_subparsers(dest="tgsp_command", required=True, metavar="COMMAND")

    build = commands.add_parser("build", help="sign and encrypt a directory or file")
    build.add_argument("source", type=Path, help="directory (or single file) to package")
    build.add_argument("-o", "--output", type=Path, required=True, help="new package file")
    build.add_argument("--signing-key", type=Path, required=True, help="producer key file")
    build.add_argument(
        "--recipient",
        type=Path,
        action="append",
        required=True,
        help="recipient public key file; repeatable",
    )
    build.add_argument("--channel", required=True, help="release channel, e.g. stable")
    build.add_argument(
        "--version", type=int, required=True, help="monotonic version on the channel"
    )
    build.add_argument("--model-name", required=True)
    build.add_argument("--model-digest", help="SHA-256 hex; default: tree digest of SOURCE")
    build.add_argument("--base-model-name")
    build.add_argument("--base-model-digest")
    build.add_argument("--round", help="training round identifier")
    build.add_argument("--gate-decision-digest", help="SHA-256 hex of the release gate decision")
    expiry = build.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=int, default=30)
    expiry.add_argument("--expires-at", type=int, help="Unix time (seconds)")
    build.add_argument("--annotation", type=_annotation, action="append", metavar="KEY=VALUE")
    build.add_argument("--chunk-size", type=int, help=CHUNK_SIZE_HELP)
    build.set_defaults(handler=reporting_errors("tgsp build", _run_build))

    inspect = commands.add_parser("inspect", help="show the header without verifying it")
    inspect.add_argument("package", type=Path, help="package file, or - to read standard input")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=reporting_errors("tgsp inspect", _run_inspect))

    verify = commands.add_parser("verify", help="verify against pinned producer keys")
    verify.add_argument("package", type=Path, help="package file, or - to read standard input")
    _add_policy_options(verify)
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=reporting_errors("tgsp verify", _run_verify))

    open_ = commands.add_parser("open", help="verify, decrypt and extract")
    open_.add_argument("package", type=Path, help="package file, or - to read standard input")
    open_.add_argument("-d", "--destination", type=Path, required=True, help="new directory")
    open_.add_argument("--recipient-key", type=Path, required=True, help="X-Wing private key file")
    open_.add_argument(
        "--readable-by-all",
        action="store_true",
        help="extract files 0644 and directories 0755 instead of the private default "
        "0600/0700 (for a service that runs as another user)",
    )
    _add_policy_options(open_)
    open_.set_defaults(handler=reporting_errors("tgsp open", _run_open))
