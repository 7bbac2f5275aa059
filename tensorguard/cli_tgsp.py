"""``tensorguard tgsp``: build, inspect, verify and open TGSP v2 packages.

Commands::

    tensorguard tgsp build SOURCE -o PACKAGE --signing-key KEY --recipient PUB [...]
                           --channel CH --version N --model-name NAME [options]
    tensorguard tgsp inspect PACKAGE [--json]
    tensorguard tgsp verify PACKAGE --trust-store FILE [--channel CH]
                            [--high-water-mark CH=N ...] [--json]
    tensorguard tgsp open PACKAGE -d DEST --recipient-key KEY --trust-store FILE
                          [--channel CH] [--high-water-mark CH=N ...]

Key and trust-store files use the formats in :mod:`tensorguard.tgsp.keyfiles` and
:mod:`tensorguard.tgsp.trust`; loading goes through :func:`load_signer`,
:func:`load_recipient_public_keys`, :func:`load_recipient_private_key` and
:func:`load_trust_store`, so another key source can replace them.

Exit codes (one per kind of refusal; messages go to stderr):

====  ==========================================================================
0     success
1     any other TensorGuard error
2     usage error (bad or missing arguments)
3     input problem: unreadable package, key file, trust store or build source
4     malformed package (magic, version, header encoding/schema, length, limits)
5     untrusted package: unknown signer or invalid signature
6     integrity failure: payload or file digest, chunk authentication
7     policy refusal: expired, not yet valid, wrong channel, below high-water mark
8     not a recipient, or the data key does not unwrap
9     unsafe path (absolute, ``..``, link, device, duplicate, case collision)
10    extraction failed (destination exists or cannot be written)
====  ==========================================================================
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tensorguard.crypto.composite import CompositeSigner
from tensorguard.crypto.xwing import XWingPrivateKey, XWingPublicKey
from tensorguard.digest import DigestError, sha256_path
from tensorguard.errors import ConfigurationError, TensorGuardError
from tensorguard.tgsp import (
    BuildError,
    ExtractionError,
    HeaderSchemaError,
    IntegrityError,
    KeyFileError,
    ModelIdentity,
    PackageFormatError,
    PackageHeader,
    PackageUnreadableError,
    PolicyError,
    RecipientError,
    ReleaseInfo,
    TrustError,
    TrustStore,
    TrustStoreError,
    UnsafePathError,
    VerificationPolicy,
    build_package,
    inspect_package,
    keyfiles,
    open_package,
    verify_package,
)
from tensorguard.tgsp.format import DEFAULT_CHUNK_SIZE, DEFAULT_LIMITS
from tensorguard.tgsp.source import collect_source_files

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_MALFORMED = 4
EXIT_UNTRUSTED = 5
EXIT_INTEGRITY = 6
EXIT_POLICY = 7
EXIT_RECIPIENT = 8
EXIT_UNSAFE_PATH = 9
EXIT_EXTRACTION = 10

# First match wins: input-file errors are checked before their broader parents.
_EXIT_CODES: tuple[tuple[type[Exception], int], ...] = (
    (KeyFileError, EXIT_INPUT),
    (TrustStoreError, EXIT_INPUT),
    (PackageUnreadableError, EXIT_INPUT),
    (BuildError, EXIT_INPUT),
    (ConfigurationError, EXIT_INPUT),
    (DigestError, EXIT_INPUT),
    (UnsafePathError, EXIT_UNSAFE_PATH),
    (PackageFormatError, EXIT_MALFORMED),
    (TrustError, EXIT_UNTRUSTED),
    (IntegrityError, EXIT_INTEGRITY),
    (PolicyError, EXIT_POLICY),
    (RecipientError, EXIT_RECIPIENT),
    (ExtractionError, EXIT_EXTRACTION),
)

SECONDS_PER_DAY = 86_400


def exit_code_for(error: Exception) -> int:
    """Return the documented exit code for a TensorGuard error."""
    for error_type, code in _EXIT_CODES:
        if isinstance(error, error_type):
            return code
    return EXIT_ERROR


# --- key loading (swap these to use another key source) ---------------------------------


def load_signer(path: Path) -> CompositeSigner:
    """Return the package signer stored at ``path``."""
    return keyfiles.load_signing_key(path)


def load_recipient_public_keys(paths: Sequence[Path]) -> list[XWingPublicKey]:
    """Return the recipients' X-Wing public keys."""
    return [keyfiles.load_recipient_public_key(path) for path in paths]


def load_recipient_private_key(path: Path) -> XWingPrivateKey:
    """Return this machine's X-Wing private key."""
    return keyfiles.load_recipient_private_key(path)


def load_trust_store(path: Path) -> TrustStore:
    """Return the pinned producer keys."""
    return TrustStore.load(path)


# --- argument helpers --------------------------------------------------------------------


def _high_water_mark(text: str) -> tuple[str, int]:
    channel, separator, version = text.partition("=")
    if not separator or not channel or not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected CHANNEL=VERSION, got {text!r}")
    return channel, int(version)


def _annotation(text: str) -> tuple[str, str]:
    key, separator, value = text.partition("=")
    if not separator or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _policy(args: argparse.Namespace) -> VerificationPolicy:
    return VerificationPolicy(
        expected_channel=args.channel, high_water_marks=dict(args.high_water_mark or [])
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
    lines += [
        f"created     {release.created_at}  expires {release.expires_at}",
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
    if given is not None:
        return given
    collect_source_files(source, DEFAULT_LIMITS)  # refuse links, devices, bad names first
    return sha256_path(source)


def _optional_identity(name: str | None, digest: str | None, what: str) -> ModelIdentity | None:
    if name is None and digest is None:
        return None
    if name is None or digest is None:
        raise ConfigurationError(f"give both --{what}-name and --{what}-digest, or neither")
    return ModelIdentity(name, digest)


def _run_build(args: argparse.Namespace) -> int:
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
        chunk_size=args.chunk_size,
    )
    print(
        f"built {result.path} ({result.package_size} bytes, {len(result.header.files)} files, "
        f"{len(result.header.recipients)} recipients, package {result.header.package_id})"
    )
    return EXIT_OK


def _release_from_args(args: argparse.Namespace, created_at: int, expires_at: int) -> ReleaseInfo:
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
    inspected = inspect_package(args.package)
    print("warning: inspect does not verify the signature; use `tgsp verify`", file=sys.stderr)
    _print_header(inspected.header, args.json, "UNVERIFIED")
    return EXIT_OK


def _run_verify(args: argparse.Namespace) -> int:
    verified = verify_package(args.package, load_trust_store(args.trust_store), _policy(args))
    _print_header(verified.header, args.json, "VERIFIED")
    return EXIT_OK


def _run_open(args: argparse.Namespace) -> int:
    opened = open_package(
        args.package,
        args.destination,
        recipient_key=load_recipient_private_key(args.recipient_key),
        trust_store=load_trust_store(args.trust_store),
        policy=_policy(args),
    )
    release = opened.header.release
    print(
        f"opened {args.package} into {opened.destination}: {len(opened.header.files)} files "
        f"verified; channel {release.channel} version {release.version} "
        f"(record it as the new high-water mark)"
    )
    return EXIT_OK


def _guarded(
    command: str, handler: Callable[[argparse.Namespace], int]
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except TensorGuardError as exc:
            print(f"tensorguard tgsp {command}: error: {exc}", file=sys.stderr)
            return exit_code_for(exc)

    return run


# --- parser ------------------------------------------------------------------------------


def _add_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust-store", type=Path, required=True, help="pinned producer keys")
    parser.add_argument("--channel", help="refuse packages released on another channel")
    parser.add_argument(
        "--high-water-mark",
        type=_high_water_mark,
        action="append",
        metavar="CHANNEL=VERSION",
        help="refuse versions below VERSION on CHANNEL (rollback protection); repeatable",
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
    build.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    build.set_defaults(handler=_guarded("build", _run_build))

    inspect = commands.add_parser("inspect", help="show the header without verifying it")
    inspect.add_argument("package", type=Path)
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(handler=_guarded("inspect", _run_inspect))

    verify = commands.add_parser("verify", help="verify against pinned producer keys")
    verify.add_argument("package", type=Path)
    _add_policy_options(verify)
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(handler=_guarded("verify", _run_verify))

    open_ = commands.add_parser("open", help="verify, decrypt and extract")
    open_.add_argument("package", type=Path)
    open_.add_argument("-d", "--destination", type=Path, required=True, help="new directory")
    open_.add_argument("--recipient-key", type=Path, required=True, help="X-Wing private key file")
    _add_policy_options(open_)
    open_.set_defaults(handler=_guarded("open", _run_open))


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tgsp`` commands standalone (``python -m tensorguard.cli_tgsp tgsp ...``)."""
    parser = argparse.ArgumentParser(prog="tensorguard")
    add_tgsp_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    exit_code: int = args.handler(args)
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
