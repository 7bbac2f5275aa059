"""Crash-safe file writes: temp file in the same directory, fsync, rename, fsync directory.

After a crash at any point a reader sees either the old file or the new one, complete.
Temporary files carry the :data:`TEMP_PREFIX` prefix so that a recovery pass can find
and remove the leftovers of an interrupted write.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tensorguard.fleet.errors import FleetError

TEMP_PREFIX = ".tmp-"
COPY_CHUNK = 1024 * 1024


def fsync_directory(directory: Path) -> None:
    """Flush a directory entry change (create, rename, unlink) to stable storage."""
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def ensure_directory(directory: Path) -> None:
    """Create ``directory`` and missing parents, making each new entry durable."""
    missing = []
    current = directory
    while not current.exists():
        missing.append(current)
        current = current.parent
    for path in reversed(missing):
        with contextlib.suppress(FileExistsError):
            path.mkdir()
        fsync_directory(path.parent)


@contextmanager
def atomic_replacement(destination: Path) -> Iterator[BinaryIO]:
    """Yield a temp file beside ``destination`` that replaces it when the block succeeds.

    On success the data is fsynced, renamed over ``destination`` and the directory is
    fsynced. If the block raises, the temporary file is removed and ``destination`` is
    left as it was.
    """
    try:
        descriptor, name = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=destination.parent)
    except OSError as exc:
        raise FleetError(
            f"cannot create a temporary file beside {destination}: {exc.strerror or exc}; "
            "check that the directory exists and is writable"
        ) from exc
    temp_path = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, destination)
        fsync_directory(destination.parent)
    except OSError as exc:
        raise FleetError(
            f"cannot write {destination}: {exc.strerror or exc}; check free space and permissions"
        ) from exc
    finally:
        temp_path.unlink(missing_ok=True)


def atomic_write_bytes(destination: Path, data: bytes) -> None:
    """Replace ``destination`` with ``data`` atomically and durably."""
    with atomic_replacement(destination) as handle:
        handle.write(data)


def atomic_copy(source: Path, destination: Path) -> tuple[str, int]:
    """Copy ``source`` to ``destination`` atomically; return its SHA-256 hex and size.

    The digest is computed over the bytes written, in the same pass as the copy.
    """
    hasher = hashlib.sha256()
    size = 0
    try:
        reader = source.open("rb")
    except OSError as exc:
        raise FleetError(f"cannot read {source}: {exc.strerror or exc}") from exc
    with reader, atomic_replacement(destination) as handle:
        for chunk in iter(lambda: reader.read(COPY_CHUNK), b""):
            hasher.update(chunk)
            handle.write(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size
