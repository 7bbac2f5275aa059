"""Collecting the files to package, refusing anything but regular files.

The source tree is walked without following symbolic links. Links, devices, FIFOs and
sockets are refused (not skipped), every path must satisfy the archive path rules, and
each file is later opened with ``O_NOFOLLOW`` and checked to be the same inode with the
same size as when it was listed, so a file swapped during packaging is detected.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tensorguard.tgsp._errors import (
    BuildError,
    HeaderTooLargeError,
    SourceChangedError,
    SpecialFileRejectedError,
    SymlinkRejectedError,
)
from tensorguard.tgsp._format import Limits
from tensorguard.tgsp._paths import check_path_set, validate_archive_path


@dataclass(frozen=True)
class SourceFile:
    """A regular file to package, as listed (path, size, identity)."""

    archive_path: str
    location: Path
    size: int
    device: int
    inode: int


def _classify(location: Path, mode: int) -> None:
    if stat.S_ISLNK(mode):
        raise SymlinkRejectedError(f"refusing symbolic link {location}; package its target instead")
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise SpecialFileRejectedError(
            f"refusing {location}: not a regular file (device, FIFO or socket)"
        )


def _walk(directory: Path, prefix: str, found: list[SourceFile], limits: Limits) -> None:
    try:
        entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
    except OSError as exc:
        raise BuildError(f"cannot list {directory}: {exc.strerror or exc}") from exc
    for entry in entries:
        location = Path(entry.path)
        info = entry.stat(follow_symlinks=False)
        _classify(location, info.st_mode)
        archive_path = validate_archive_path(f"{prefix}{entry.name}")
        if stat.S_ISDIR(info.st_mode):
            _walk(location, f"{archive_path}/", found, limits)
            continue
        found.append(SourceFile(archive_path, location, info.st_size, info.st_dev, info.st_ino))
        if len(found) > limits.max_files:
            raise HeaderTooLargeError(
                f"{directory} holds more than {limits.max_files} files, the package limit"
            )


def collect_source_files(source: Path, limits: Limits) -> list[SourceFile]:
    """List the regular files under ``source`` (or ``source`` itself), sorted by path."""
    try:
        info = source.lstat()
    except OSError as exc:
        raise BuildError(f"cannot read package source {source}: {exc.strerror or exc}") from exc
    _classify(source, info.st_mode)
    found: list[SourceFile] = []
    if stat.S_ISREG(info.st_mode):
        name = validate_archive_path(source.name)
        found.append(SourceFile(name, source, info.st_size, info.st_dev, info.st_ino))
    else:
        _walk(source, "", found, limits)
    found.sort(key=lambda item: item.archive_path)
    check_path_set(item.archive_path for item in found)
    return found


@contextmanager
def open_source_file(item: SourceFile) -> Iterator[io.FileIO]:
    """Open a listed file without following links; refuse it if it changed."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        descriptor = os.open(item.location, flags)
    except OSError as exc:
        raise SourceChangedError(
            f"cannot open {item.location} ({exc.strerror or exc}); it changed during packaging"
        ) from exc
    handle = os.fdopen(descriptor, "rb", buffering=0)
    with handle:
        info = os.fstat(handle.fileno())
        if (
            not stat.S_ISREG(info.st_mode)
            or (info.st_dev, info.st_ino) != (item.device, item.inode)
            or info.st_size != item.size
        ):
            raise SourceChangedError(
                f"{item.location} was replaced or resized during packaging; rebuild the package"
            )
        yield handle
