"""Publish a directory of artifacts atomically.

Writers fill a private staging directory next to the destination; only when they
finish without an exception is the staging directory renamed into place. Readers
therefore see either the previous complete artifact or the new complete one, never
a half-written directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tensorguard.errors import TensorGuardError

_PUBLISHED_MODE = 0o755


class AtomicPublishError(TensorGuardError):
    """An artifact directory could not be published in place of its destination."""


@contextmanager
def atomic_output_dir(destination: Path) -> Iterator[Path]:
    """Yield an empty staging directory that replaces ``destination`` on success.

    The staging directory lives in the destination's parent, so the final rename
    never crosses file systems. On any exception the staging directory is removed
    and ``destination`` is left untouched.
    """
    if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
        raise AtomicPublishError(
            f"cannot publish artifacts to {destination}: it exists and is not a directory; "
            "remove it or choose another output path"
        )
    parent = destination.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.staging-", dir=parent))
    try:
        yield staging
        _fsync_tree(staging)
        os.chmod(staging, _PUBLISHED_MODE)
        _replace_directory(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    """Flush every regular file under ``root`` to stable storage before the rename."""
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())


def _replace_directory(staging: Path, destination: Path) -> None:
    """Rename ``staging`` to ``destination``, retiring an existing destination first."""
    if not destination.exists():
        os.replace(staging, destination)
        _fsync_directory(destination.parent)
        return
    retired_root = Path(
        tempfile.mkdtemp(prefix=f".{destination.name}.retired-", dir=destination.parent)
    )
    retired = retired_root / destination.name
    os.replace(destination, retired)
    try:
        os.replace(staging, destination)
    except OSError:
        os.replace(retired, destination)
        retired_root.rmdir()
        raise
    _fsync_directory(destination.parent)
    shutil.rmtree(retired_root, ignore_errors=True)


def _fsync_directory(directory: Path) -> None:
    """Persist a rename by syncing the directory that holds the renamed entry."""
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
