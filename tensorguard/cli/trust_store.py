"""``tensorguard trust-store create|add|remove``: the pinned release keys of verifiers.

A trust store (docs/TGSP.md §11) lists the composite public keys a verifier accepts as
package signers. ``create`` writes a new store from public key files (``tensorguard
keys show --public-out``), ``add`` pins one more key (key rotation, docs/KEYS.md),
``remove`` unpins a key by key id, unique prefix or label and refuses to remove the
last one. Every change is written atomically; an existing store is never overwritten by
``create``.

Exit codes (:mod:`tensorguard.cli.exit_codes`): ``OK``; ``INPUT`` when a key file or the
store cannot be used (unreadable, not a composite public key, already pinned, not
pinned, the last key). The handlers import :mod:`tensorguard.tgsp`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from tensorguard.cli.exit_codes import ExitCode, reporting_errors

if TYPE_CHECKING:
    from tensorguard.tgsp import TrustStore


def add_trust_store_commands(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register ``trust-store create|add|remove``; each sets ``args.handler``."""
    trust_store = subparsers.add_parser(
        "trust-store",
        help="create a trust store and pin or unpin release signing keys",
        description="Trust stores pin the release signing keys that verifiers accept "
        "(docs/TGSP.md §11, rotation in docs/KEYS.md).",
    )
    commands = trust_store.add_subparsers(dest="trust_store_command", required=True)

    create = commands.add_parser("create", help="write a new trust store; never overwrites")
    create.add_argument("store", type=Path, help="the trust store file to create")
    create.add_argument(
        "key_files", type=Path, nargs="+", metavar="PUBLIC_KEY", help="public key files to pin"
    )
    create.add_argument(
        "--label",
        action="append",
        default=[],
        help="a label per key file, in order (default: the file name without .pub)",
    )
    create.set_defaults(handler=reporting_errors("trust-store create", _create))

    add = commands.add_parser("add", help="pin one more key (e.g. a rotated release key)")
    add.add_argument("store", type=Path)
    add.add_argument("key_file", type=Path, metavar="PUBLIC_KEY")
    add.add_argument("--label", help="display name (default: the file name without .pub)")
    add.set_defaults(handler=reporting_errors("trust-store add", _add))

    remove = commands.add_parser("remove", help="unpin a key; the last key is never removed")
    remove.add_argument("store", type=Path)
    remove.add_argument("key", help="key id, a unique prefix of 8+ hex digits, or a label")
    remove.set_defaults(handler=reporting_errors("trust-store remove", _remove))


def _default_label(path: Path) -> str:
    return path.name.removesuffix(".pub")


def _create(args: argparse.Namespace) -> int:
    from tensorguard.tgsp import TrustStore, TrustStoreError, load_verify_key

    if args.store.exists() or args.store.is_symlink():
        raise TrustStoreError(f"{args.store} already exists; use `trust-store add` to extend it")
    if len(args.label) > len(args.key_files):
        raise TrustStoreError("more --label values than key files")
    labels = [*args.label, *map(_default_label, args.key_files[len(args.label) :])]
    store = TrustStore()
    for key_file, label in zip(args.key_files, labels, strict=True):
        store = store.with_key(load_verify_key(key_file), label)
    _save(store, args.store, f"created with {len(store)} key(s)")
    return ExitCode.OK


def _add(args: argparse.Namespace) -> int:
    from tensorguard.tgsp import TrustStore, load_verify_key

    key = load_verify_key(args.key_file)
    store = TrustStore.load(args.store).with_key(key, args.label or _default_label(args.key_file))
    _save(store, args.store, f"pinned {key.fingerprint()}; {len(store)} key(s)")
    return ExitCode.OK


def _remove(args: argparse.Namespace) -> int:
    from tensorguard.tgsp import TrustStore

    store = TrustStore.load(args.store)
    key_id = store.resolve(args.key)
    store = store.without(key_id)
    _save(store, args.store, f"unpinned {key_id}; {len(store)} key(s)")
    return ExitCode.OK


def _save(store: TrustStore, path: Path, what: str) -> None:
    """Write ``store`` atomically and print its keys (key id, label) and ``what`` changed."""
    store.save(path)
    for key in store:
        label = store.label(key.fingerprint()) or ""
        print(f"{key.fingerprint()}\t{label}")
    print(f"{path}: {what}")
