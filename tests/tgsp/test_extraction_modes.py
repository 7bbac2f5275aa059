"""Decrypted files are private at rest: 0600 files in 0700 directories unless the caller
widens them on purpose (``readable_by_all`` / ``tgsp open --readable-by-all``)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode, main
from tensorguard.crypto import XWingPrivateKey
from tensorguard.tgsp import TrustStore, open_package
from tensorguard.tgsp._keyfiles import write_key_file
from tests.tgsp.conftest import Packager

TREE = {"adapter/config.json": b"{}", "adapter/deep/weights.bin": b"w" * 300, "README": b"r"}


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: any mode narrower than 0666/0777 comes from the opener, not the umask."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def _modes(root: Path) -> dict[str, int]:
    entries = [root, *sorted(root.rglob("*"))]
    return {p.relative_to(root).as_posix(): stat.S_IMODE(p.lstat().st_mode) for p in entries}


def _expected(file_mode: int, directory_mode: int) -> dict[str, int]:
    directories = {".", "adapter", "adapter/deep"}
    names = directories | set(TREE)
    return {name: directory_mode if name in directories else file_mode for name in names}


@pytest.mark.usefixtures("permissive_umask")
def test_open_is_private_by_default(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    package = packager.build(TREE)
    out = tmp_path / "out"
    open_package(package.path, out, recipient_key=recipients[0], trust_store=trust_store)
    assert _modes(out) == _expected(0o600, 0o700)


@pytest.mark.usefixtures("permissive_umask")
def test_readable_by_all_widens_on_request(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    package = packager.build(TREE)
    out = tmp_path / "out"
    open_package(
        package.path,
        out,
        recipient_key=recipients[0],
        trust_store=trust_store,
        readable_by_all=True,
    )
    assert _modes(out) == _expected(0o644, 0o755)


@pytest.mark.usefixtures("permissive_umask")
def test_cli_open_modes(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    package = packager.build(TREE)
    key, trust = tmp_path / "node.key", tmp_path / "trust.json"
    write_key_file(key, recipients[0])
    trust_store.save(trust)
    common = ["--recipient-key", str(key), "--trust-store", str(trust)]
    private, shared = tmp_path / "private", tmp_path / "shared"
    assert main(["tgsp", "open", str(package.path), "-d", str(private), *common]) == ExitCode.OK
    assert _modes(private) == _expected(0o600, 0o700)
    widened = ["tgsp", "open", str(package.path), "-d", str(shared), "--readable-by-all"]
    assert main([*widened, *common]) == ExitCode.OK
    assert _modes(shared) == _expected(0o644, 0o755)
