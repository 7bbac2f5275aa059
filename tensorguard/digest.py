"""Streaming SHA-256 digests of files and directory trees.

Directory digests are computed over a canonical listing: each regular file's
POSIX relative path, its size and its SHA-256, sorted by path. The result does not
depend on file-system order, timestamps or permissions, so two byte-identical trees
always have the same digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from tensorguard.errors import TensorGuardError

CHUNK_SIZE = 1024 * 1024


class DigestError(TensorGuardError):
    """A file or directory could not be hashed."""


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, reading it in 1 MiB chunks."""
    hasher = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_SIZE), b""):
                hasher.update(chunk)
    except OSError as exc:
        raise DigestError(f"cannot hash {path}: {exc.strerror or exc}") from exc
    return hasher.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 of an in-memory byte string."""
    return hashlib.sha256(data).hexdigest()


def sha256_path(path: Path) -> str:
    """The SHA-256 of a file, or :func:`sha256_tree` of a directory."""
    return sha256_file(path) if path.is_file() else sha256_tree(path)


def file_manifest(root: Path) -> dict[str, str]:
    """Map each regular file under ``root`` (relative POSIX path) to its SHA-256.

    Symbolic links are refused rather than followed, so a digest always describes
    bytes that live inside ``root``.
    """
    if not root.is_dir():
        raise DigestError(f"{root} is not a directory")
    manifest: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise DigestError(f"refusing to hash symbolic link {path}")
        if path.is_file():
            manifest[path.relative_to(root).as_posix()] = sha256_file(path)
    return manifest


def sha256_tree(root: Path) -> str:
    """Return one hex SHA-256 over every regular file under ``root``."""
    hasher = hashlib.sha256()
    for relative, file_digest in file_manifest(root).items():
        size = (root / relative).stat().st_size
        hasher.update(f"{relative}\0{size}\0{file_digest}\n".encode())
    return hasher.hexdigest()
