"""``tensorguard keys generate|show``: create signing and KEM keys, print their fingerprints.

The provider comes from the environment (``TG_KEY_PROVIDER`` and friends, see
``docs/KEYS.md``); the CLI never uses a throwaway master, since keys it writes must
outlive it.

Exit codes: :mod:`tensorguard.cli.exit_codes` (``CONFIG``, ``INTEGRITY`` and
``KEY_NOT_FOUND`` through ``TOKEN``). The key providers are imported by the handlers,
so ``tensorguard keys ... --help`` loads none of them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tensorguard.cli.exit_codes import ExitCode, reporting_errors

if TYPE_CHECKING:
    from tensorguard.crypto import CompositeVerifyKey, XWingPublicKey
    from tensorguard.keys import KeyProvider

SIGNING = "signing"
KEM = "kem"
KEY_KINDS = (KEM, SIGNING)
XWING_ALGORITHM = "X-Wing (ML-KEM-768 + X25519)"

KeysCommand = Callable[[argparse.Namespace, "KeyProvider", TextIO], None]


def add_keys_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``keys generate`` and ``keys show``; each sets ``args.handler``."""
    keys = subparsers.add_parser(
        "keys",
        help="generate and inspect signing and KEM keys",
        description="Keys live in the provider selected by TG_KEY_PROVIDER (see docs/KEYS.md).",
    )
    commands = keys.add_subparsers(dest="keys_command", required=True)

    generate = commands.add_parser("generate", help="create a new key; never overwrites")
    _add_key_arguments(generate, name_required=True)
    generate.set_defaults(handler=reporting_errors("keys", _with_provider(_generate)))

    show = commands.add_parser("show", help="print a key's fingerprint, or list all keys")
    _add_key_arguments(show, name_required=False)
    show.set_defaults(handler=reporting_errors("keys", _with_provider(_show)))


def _add_key_arguments(parser: argparse.ArgumentParser, *, name_required: bool) -> None:
    parser.add_argument(
        "--name",
        required=name_required,
        help="key name: 1-63 of a-z 0-9 _ . - (omit with show to list every key)",
    )
    parser.add_argument(
        "--kind",
        choices=KEY_KINDS,
        default=SIGNING,
        help="signing: composite ML-DSA-65+Ed25519 (default); kem: X-Wing recipient key",
    )
    parser.add_argument(
        "--public-out",
        type=Path,
        help=(
            "also write the public key as a tensorguard-key file (the format of fleet "
            "recipients, `tgsp build --recipient` and site registries)"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def _with_provider(command: KeysCommand) -> Callable[[argparse.Namespace], int]:
    """Run ``command`` with the provider the environment selects, then close it."""

    def handler(args: argparse.Namespace) -> int:
        from tensorguard.keys import key_provider_from_env

        with key_provider_from_env(os.environ, allow_ephemeral=False) as provider:
            command(args, provider, sys.stdout)
        return ExitCode.OK

    return handler


def _generate(args: argparse.Namespace, provider: KeyProvider, out: TextIO) -> None:
    from tensorguard.crypto import COMPOSITE_ALGORITHM

    if args.public_out is not None:
        prepare_public_out(args.public_out)  # before the key is stored, so a retry works
    if args.kind == SIGNING:
        public: CompositeVerifyKey | XWingPublicKey = provider.generate_signing_key(
            args.name
        ).public_key()
        described = _describe(args, provider, COMPOSITE_ALGORITHM, public.fingerprint())
    else:
        public = provider.generate_kem_key(args.name)
        described = _describe(args, provider, XWING_ALGORITHM, public.fingerprint())
    _emit(args, described, public, out)


def _show(args: argparse.Namespace, provider: KeyProvider, out: TextIO) -> None:
    from tensorguard.crypto import COMPOSITE_ALGORITHM

    if args.name is None:
        listing = [
            {
                "name": info.name,
                "purpose": info.purpose.value,
                "provider": info.provider,
                "created_at": info.created_at.isoformat(),
            }
            for info in provider.list_keys()
        ]
        if args.json:
            out.write(json.dumps(listing, indent=2) + "\n")
        else:
            for entry in listing:
                out.write(f"{entry['name']}\t{entry['purpose']}\t{entry['created_at']}\n")
        return
    if args.kind == SIGNING:
        public: CompositeVerifyKey | XWingPublicKey = provider.public_key(args.name)
        described = _describe(args, provider, COMPOSITE_ALGORITHM, public.fingerprint())
    else:
        public = provider.kem_private_key(args.name).public_key()
        described = _describe(args, provider, XWING_ALGORITHM, public.fingerprint())
    _emit(args, described, public, out)


def prepare_public_out(path: Path) -> None:
    """Make sure the public key file ``path`` can be written: create its directory, refuse
    an existing file or an unwritable directory (:class:`KeyFileError`, exit ``INPUT``).

    ``keys generate`` calls it before it stores a key, so a bad ``--public-out`` never
    leaves a stored key behind that a retry would refuse to overwrite.
    """
    from tensorguard.tgsp import KeyFileError

    if path.exists() or path.is_symlink():
        raise KeyFileError(
            f"--public-out {path} already exists; remove it or choose another path "
            "(nothing was stored)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyFileError(
            f"cannot create the directory of --public-out {path}: {exc.strerror}; choose a "
            "writable location (nothing was stored)"
        ) from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise KeyFileError(
            f"cannot write --public-out {path}: {path.parent} is not writable; choose a "
            "writable location (nothing was stored)"
        )


def _describe(
    args: argparse.Namespace, provider: KeyProvider, algorithm: str, fingerprint: str
) -> dict[str, str]:
    return {
        "name": args.name,
        "kind": args.kind,
        "algorithm": algorithm,
        "provider": provider.kind,
        "fingerprint": fingerprint,
    }


def _emit(
    args: argparse.Namespace,
    described: dict[str, str],
    public: CompositeVerifyKey | XWingPublicKey,
    out: TextIO,
) -> None:
    from tensorguard.tgsp import write_key_file

    if args.public_out is not None:
        prepare_public_out(args.public_out)
        write_key_file(args.public_out, public)
        described["public_key_file"] = str(args.public_out)
    if args.json:
        out.write(json.dumps(described, indent=2) + "\n")
    else:
        out.writelines(f"{key}: {value}\n" for key, value in described.items())
