"""``tensorguard keys generate|show``: create signing and KEM keys, print their fingerprints.

The provider comes from the environment (``TG_KEY_PROVIDER`` and friends, see
``docs/KEYS.md``); the CLI never uses a throwaway master, since keys it writes must
outlive it. Wire it in with::

    subparsers = parser.add_subparsers(dest="command", required=True)
    add_keys_commands(subparsers)
    args = parser.parse_args()
    sys.exit(args.handler(args))

Exit codes (``argparse`` itself exits 2 on usage errors):

==  ===========================================================================
0   success
1   any other TensorGuard error
3   configuration missing or refused (including production refusals)
4   key not found
5   key already exists (generate refuses to overwrite)
6   stored key failed authentication (wrong TG_KEY_MASTER, altered or misplaced file)
7   provider unavailable (KMS, PKCS#11 module or python-pkcs11 missing)
8   PKCS#11 token operation failed
==  ===========================================================================
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from tensorguard.crypto.composite import COMPOSITE_ALGORITHM, CompositeVerifyKey
from tensorguard.crypto.xwing import XWingPublicKey
from tensorguard.errors import ConfigurationError, TensorGuardError
from tensorguard.keys import (
    KeyExistsError,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProvider,
    KeyProviderUnavailable,
    KeyPurpose,
    TokenError,
    key_provider_from_env,
)
from tensorguard.tgsp.keyfiles import write_key_file

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 3
EXIT_NOT_FOUND = 4
EXIT_EXISTS = 5
EXIT_INTEGRITY = 6
EXIT_UNAVAILABLE = 7
EXIT_TOKEN = 8

_EXIT_CODES: tuple[tuple[type[TensorGuardError], int], ...] = (
    (ConfigurationError, EXIT_CONFIG),
    (KeyNotFoundError, EXIT_NOT_FOUND),
    (KeyExistsError, EXIT_EXISTS),
    (KeyIntegrityError, EXIT_INTEGRITY),
    (KeyProviderUnavailable, EXIT_UNAVAILABLE),
    (TokenError, EXIT_TOKEN),
)
KEY_KINDS = {"signing": KeyPurpose.SIGNING, "kem": KeyPurpose.KEM}
XWING_ALGORITHM = "X-Wing (ML-KEM-768 + X25519)"


def exit_code_for(error: TensorGuardError) -> int:
    """The documented exit code of ``error``."""
    for error_type, code in _EXIT_CODES:
        if isinstance(error, error_type):
            return code
    return EXIT_ERROR


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
    generate.set_defaults(handler=_guarded(_generate))

    show = commands.add_parser("show", help="print a key's fingerprint, or list all keys")
    _add_key_arguments(show, name_required=False)
    show.set_defaults(handler=_guarded(_show))


def _add_key_arguments(parser: argparse.ArgumentParser, *, name_required: bool) -> None:
    parser.add_argument(
        "--name",
        required=name_required,
        help="key name: 1-63 of a-z 0-9 _ . - (omit with show to list every key)",
    )
    parser.add_argument(
        "--kind",
        choices=sorted(KEY_KINDS),
        default="signing",
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


def _guarded(
    command: Callable[[argparse.Namespace, KeyProvider, TextIO], None],
) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        try:
            with key_provider_from_env(os.environ, allow_ephemeral=False) as provider:
                command(args, provider, sys.stdout)
        except TensorGuardError as error:
            print(f"tensorguard keys: error: {error}", file=sys.stderr)
            return exit_code_for(error)
        return EXIT_OK

    return handler


def _generate(args: argparse.Namespace, provider: KeyProvider, out: TextIO) -> None:
    if KEY_KINDS[args.kind] is KeyPurpose.SIGNING:
        public: CompositeVerifyKey | XWingPublicKey = provider.generate_signing_key(
            args.name
        ).public_key()
        described = _describe(args, provider, COMPOSITE_ALGORITHM, public.fingerprint())
    else:
        public = provider.generate_kem_key(args.name)
        described = _describe(args, provider, XWING_ALGORITHM, public.fingerprint())
    _emit(args, described, public, out)


def _show(args: argparse.Namespace, provider: KeyProvider, out: TextIO) -> None:
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
    if KEY_KINDS[args.kind] is KeyPurpose.SIGNING:
        public: CompositeVerifyKey | XWingPublicKey = provider.public_key(args.name)
        described = _describe(args, provider, COMPOSITE_ALGORITHM, public.fingerprint())
    else:
        public = provider.kem_private_key(args.name).public_key()
        described = _describe(args, provider, XWING_ALGORITHM, public.fingerprint())
    _emit(args, described, public, out)


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
    if args.public_out is not None:
        write_key_file(args.public_out, public)
        described["public_key_file"] = str(args.public_out)
    if args.json:
        out.write(json.dumps(described, indent=2) + "\n")
    else:
        out.writelines(f"{key}: {value}\n" for key, value in described.items())
