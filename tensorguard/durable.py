"""Crash-safe, durable writes of files, directories and symbolic links.

Every writer in TensorGuard goes through this module, so there is one way to publish
bytes on disk: build the new content under a temporary name beside its destination,
flush it to stable storage, move it into place with one rename (or hard link, when an
existing destination must not be replaced), then flush the parent directory so the
rename itself survives a crash. A reader therefore sees the previous complete content
or the new complete content, never a mix, and a failure leaves the destination as it
was and removes the temporary entry.

Temporary entries carry the :data:`TEMP_PREFIX` prefix, so a recovery pass can find and
remove the leftovers of a write interrupted by a crash.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from tensorguard.errors import TensorGuardError

TEMP_PREFIX = ".tmp-"
"""Name prefix of every temporary file, directory and link this module creates."""

DEFAULT_FILE_MODE = 0o644
DEFAULT_DIRECTORY_MODE = 0o755
COPY_CHUNK = 1024 * 1024
_TEMP_NAME_KEEP = 64
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


class DurableWriteError(TensorGuardError):
    """A file, directory or link could not be written, flushed or moved into place."""


class DestinationExistsError(DurableWriteError):
    """The destination already exists and the write was asked not to replace it."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _temporary_name(destination: Path, kind: str = "") -> Path:
    """A fresh temporary path beside ``destination`` (same directory, same file system)."""
    token = secrets.token_hex(8)
    return destination.parent / f"{TEMP_PREFIX}{kind}{token}-{destination.name[:_TEMP_NAME_KEEP]}"


def _fsync_entry(path: Path, flags: int, what: str) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY | flags)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    except OSError as exc:
        raise DurableWriteError(
            f"cannot flush {what} {path} to disk: {_reason(exc)}; check that it exists, "
            f"is a {what} you can read, and that the file system is healthy"
        ) from exc


def fsync_file(path: Path) -> None:
    """Flush the content of the regular file ``path`` to stable storage."""
    _fsync_entry(path, os.O_NOFOLLOW, "file")


def flush_descriptor_data(descriptor: int) -> None:
    """``fdatasync`` an open descriptor: its data reaches the disk (metadata as needed).

    For writers that start writeback early on a file they still have open; whether the
    file is durable is still decided by the final fsync of its publish step.
    """
    os.fdatasync(descriptor)


def fsync_directory(directory: Path) -> None:
    """Flush the entries of ``directory`` (creations, renames, removals) to stable storage."""
    _fsync_entry(directory, os.O_DIRECTORY, "directory")


def fsync_tree(root: Path) -> None:
    """Flush every regular file and every directory under ``root`` (``root`` included).

    Symbolic links are not followed. Call it before a tree is made visible by a rename,
    so the rename can never expose files whose data is still only in memory.
    """
    for directory, _subdirectories, files in os.walk(root):
        for name in files:
            path = Path(directory) / name
            if not path.is_symlink():
                fsync_file(path)
        fsync_directory(Path(directory))


def ensure_directory(directory: Path, *, mode: int = 0o777) -> None:
    """Create ``directory`` and missing parents, flushing each new entry to disk.

    ``mode`` applies to the directories created (after the umask); existing ones are
    left as they are.
    """
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for path in reversed(missing):
        try:
            with contextlib.suppress(FileExistsError):
                path.mkdir(mode=mode)
            if not path.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", str(path))
        except OSError as exc:
            raise DurableWriteError(
                f"cannot create directory {path}: {_reason(exc)}; check that the path is "
                "not taken by a file and that its parent is writable"
            ) from exc
        fsync_directory(path.parent)


@contextmanager
def atomic_file(
    destination: Path, *, mode: int = DEFAULT_FILE_MODE, overwrite: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary handle whose content becomes ``destination`` when the block succeeds.

    The handle writes to a new temporary file beside ``destination`` (created with
    ``mode``, after the umask; it may seek). On success the data is flushed to disk and
    moved into place, and the directory is flushed. With ``overwrite=False`` an existing
    ``destination`` is never replaced: :class:`DestinationExistsError` is raised instead,
    even when another writer creates it concurrently. If the block raises, the temporary
    file is removed and ``destination`` is left as it was.
    """
    temporary = _temporary_name(destination)
    try:
        descriptor = os.open(temporary, _NEW_FILE_FLAGS, mode)
    except OSError as exc:
        raise DurableWriteError(
            f"cannot create a temporary file beside {destination}: {_reason(exc)}; check "
            "that the directory exists and is writable"
        ) from exc
    try:
        with os.fdopen(descriptor, "wb") as handle:
            yield handle
            try:
                handle.flush()
                os.fsync(handle.fileno())
            except OSError as exc:
                raise DurableWriteError(
                    f"cannot write {destination}: {_reason(exc)}; check free space and permissions"
                ) from exc
        _move_file_into_place(temporary, destination, overwrite=overwrite)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_directory(destination.parent)


def _move_file_into_place(temporary: Path, destination: Path, *, overwrite: bool) -> None:
    try:
        if overwrite:
            os.replace(temporary, destination)
        else:
            os.link(temporary, destination)
    except FileExistsError as exc:
        raise DestinationExistsError(
            f"{destination} already exists and was not replaced; remove it or choose another name"
        ) from exc
    except OSError as exc:
        raise DurableWriteError(
            f"cannot move the new content into {destination}: {_reason(exc)}; check that "
            "the path is not a directory and that its directory is writable"
        ) from exc


def publish_file(finished: Path, destination: Path) -> None:
    """Durably rename the finished file ``finished`` (a staging file kept across attempts,
    such as a resumable download) over ``destination`` in the same directory.

    The content is flushed first and the directory after, so after a crash
    ``destination`` is either absent or its old content or the whole new file.
    """
    fsync_file(finished)
    _move_file_into_place(finished, destination, overwrite=True)
    fsync_directory(destination.parent)


def atomic_write_bytes(
    destination: Path, data: bytes, *, mode: int = DEFAULT_FILE_MODE, overwrite: bool = True
) -> None:
    """Write ``data`` to ``destination`` atomically and durably (see :func:`atomic_file`)."""
    with atomic_file(destination, mode=mode, overwrite=overwrite) as handle:
        handle.write(data)


def atomic_copy(
    source: Path, destination: Path, *, mode: int = DEFAULT_FILE_MODE
) -> tuple[str, int]:
    """Copy ``source`` to ``destination`` atomically; return the SHA-256 hex and size.

    The digest is computed over the bytes written, in the same pass as the copy.
    """
    hasher = hashlib.sha256()
    size = 0
    try:
        reader = source.open("rb")
    except OSError as exc:
        raise DurableWriteError(
            f"cannot read {source} to copy it: {_reason(exc)}; check that it exists and is readable"
        ) from exc
    with reader, atomic_file(destination, mode=mode) as handle:
        for chunk in iter(lambda: reader.read(COPY_CHUNK), b""):
            hasher.update(chunk)
            handle.write(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def atomic_symlink(target: str, link: Path) -> None:
    """Point the symbolic link ``link`` at ``target`` with one rename, durably.

    An existing link at ``link`` is replaced; readers follow either the old or the new
    target, never a missing link.
    """
    temporary = _temporary_name(link)
    try:
        os.symlink(target, temporary)
        os.replace(temporary, link)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise DurableWriteError(
            f"cannot point {link} at {target}: {_reason(exc)}; check that {link} is not a "
            "directory and that its directory is writable"
        ) from exc
    fsync_directory(link.parent)


def _refuse_non_directory(destination: Path) -> None:
    if destination.is_symlink() or (destination.exists() and not destination.is_dir()):
        raise DurableWriteError(
            f"cannot publish a directory at {destination}: it exists and is not a "
            "directory (symbolic links are refused); remove it or choose another path"
        )


@contextmanager
def atomic_directory(
    destination: Path, *, replace: bool = True, mode: int = DEFAULT_DIRECTORY_MODE
) -> Iterator[Path]:
    """Yield an empty staging directory that becomes ``destination`` when the block succeeds.

    The staging directory lives in ``destination``'s parent (created if missing), so the
    final rename never crosses file systems. On success its mode is set to ``mode``, the
    whole tree is flushed to disk and renamed into place. An existing ``destination`` is
    swapped out only after the new tree is complete (``replace=True``) or refused with
    :class:`DestinationExistsError` (``replace=False``). A destination that exists and is
    not a directory is always refused. If the block raises, the staging directory is
    removed and ``destination`` is untouched.
    """
    _refuse_non_directory(destination)
    if not replace and destination.exists():
        raise DestinationExistsError(
            f"{destination} already exists and was not replaced; remove it or choose "
            "another output directory"
        )
    ensure_directory(destination.parent)
    try:
        staging = Path(
            tempfile.mkdtemp(
                prefix=f"{TEMP_PREFIX}{destination.name[:_TEMP_NAME_KEEP]}-",
                dir=destination.parent,
            )
        )
    except OSError as exc:
        raise DurableWriteError(
            f"cannot create a staging directory beside {destination}: {_reason(exc)}; "
            "check that the parent directory is writable"
        ) from exc
    try:
        yield staging
        try:
            staging.chmod(mode)
        except OSError as exc:
            raise DurableWriteError(
                f"cannot set the mode of the new {destination}: {_reason(exc)}"
            ) from exc
        fsync_tree(staging)
        _swap_directory_in(staging, destination, replace=replace)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_directory_in(staging: Path, destination: Path, *, replace: bool) -> None:
    """Rename ``staging`` to ``destination``, retiring an existing one when allowed."""
    _refuse_non_directory(destination)
    if not destination.exists():
        _rename_directory(staging, destination)
        fsync_directory(destination.parent)
        return
    if not replace:
        raise DestinationExistsError(
            f"{destination} appeared while its new content was being written; it was not "
            "replaced: remove it or choose another output directory"
        )
    retired = _temporary_name(destination, kind="retired-")
    _rename_directory(destination, retired)
    try:
        _rename_directory(staging, destination)
    except DurableWriteError:
        _rename_directory(retired, destination)
        raise
    fsync_directory(destination.parent)
    try:
        shutil.rmtree(retired)
    except OSError as exc:
        raise DurableWriteError(
            f"published {destination}, but cannot remove its previous content at "
            f"{retired}: {_reason(exc)}; remove that directory by hand"
        ) from exc


def _rename_directory(source: Path, destination: Path) -> None:
    try:
        os.replace(source, destination)
    except OSError as exc:
        raise DurableWriteError(
            f"cannot rename {source} to {destination}: {_reason(exc)}; check that both are "
            "on the same file system, that the parent directory is writable and that "
            f"{destination} is not a non-empty directory created by someone else"
        ) from exc
