"""A private directory of key records: 0700 directory, 0600 files, atomic writes.

Files are written with :func:`tensorguard.durable.atomic_write_bytes` at mode 0600: a
temporary file, flushed to disk, then linked into place (refusing to overwrite) or
renamed over the old record (on request), and the directory is flushed, so a crash never
leaves a partly written key and a concurrent writer can never clobber an existing one
silently.
Reads refuse symbolic links and files that other users can read or write.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from tensorguard.durable import TEMP_PREFIX, DestinationExistsError, atomic_write_bytes
from tensorguard.keys._errors import KeyExistsError, KeyNotFoundError, KeyProviderConfigError
from tensorguard.keys._names import KeyPurpose
from tensorguard.keys._record import RECORD_SUFFIX

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


class KeyDirectory:
    """Where sealed key records live on disk; one file per (name, purpose)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"KeyDirectory({str(self.path)!r})"

    def record_path(self, name: str, purpose: KeyPurpose) -> Path:
        """The file that holds key ``name`` for ``purpose`` (name must be validated)."""
        return self.path / f"{name}.{purpose.value}{RECORD_SUFFIX}"

    def ensure(self) -> None:
        """Create the directory with mode 0700, or check that an existing one is private."""
        try:
            self.path.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
            info = self.path.lstat()
        except OSError as exc:
            raise KeyProviderConfigError(
                f"cannot create key directory {self.path}: {exc.strerror}; "
                "point TG_KEY_DIR at a writable location"
            ) from None
        if not stat.S_ISDIR(info.st_mode):
            raise KeyProviderConfigError(
                f"key directory {self.path} is not a directory (symbolic links are refused); "
                "point TG_KEY_DIR at a real directory"
            )
        if info.st_mode & 0o077:
            raise KeyProviderConfigError(
                f"key directory {self.path} is accessible to other users "
                f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 700 {self.path}`"
            )

    def write(self, name: str, purpose: KeyPurpose, data: bytes, *, replace: bool) -> Path:
        """Atomically write a record; refuse to overwrite unless ``replace`` is set."""
        self.ensure()
        target = self.record_path(name, purpose)
        try:
            atomic_write_bytes(target, data, mode=FILE_MODE, overwrite=replace)
        except DestinationExistsError:
            raise self._exists_error(name, purpose) from None
        return target

    def read(self, name: str, purpose: KeyPurpose) -> bytes:
        """Read the record for (name, purpose); a missing one is :class:`KeyNotFoundError`."""
        try:
            return self.read_file(self.record_path(name, purpose))
        except FileNotFoundError:
            raise KeyNotFoundError(
                f"key {name!r} ({purpose.value}) not found in {self.path}; check the name "
                "and TG_KEY_DIR, or create it (signing and KEM keys: "
                f"`tensorguard keys generate --name {name}`)"
            ) from None

    def read_file(self, path: Path) -> bytes:
        """Read one record file, refusing symbolic links, anything but a regular file, and
        files other users can access.

        The file is checked through its descriptor before it is wrapped for reading: a
        directory or FIFO at a record's path is refused as such (``O_NONBLOCK`` keeps a
        FIFO from blocking the open) instead of escaping as ``IsADirectoryError`` or
        hanging the reader.
        """
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise KeyProviderConfigError(
                f"cannot open key file {path}: {exc.strerror} (symbolic links are refused)"
            ) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise KeyProviderConfigError(f"key file {path} is not a regular file")
            if info.st_mode & 0o077:
                raise KeyProviderConfigError(
                    f"key file {path} is accessible to other users "
                    f"(mode {stat.S_IMODE(info.st_mode):o}); run `chmod 600 {path}`"
                )
            handle = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with handle:
            return handle.read()

    def exists(self, name: str, purpose: KeyPurpose) -> bool:
        """True when a record for (name, purpose) is present."""
        return self.record_path(name, purpose).is_file()

    def require_absent(self, name: str, purpose: KeyPurpose) -> None:
        """Raise :class:`KeyExistsError` when a record for (name, purpose) is present."""
        if self.record_path(name, purpose).exists():
            raise self._exists_error(name, purpose)

    def _exists_error(self, name: str, purpose: KeyPurpose) -> KeyExistsError:
        return KeyExistsError(
            f"key {name!r} ({purpose.value}) already exists in {self.path}; refusing to "
            "overwrite it: choose another name, or rotate (see docs/KEYS.md)"
        )

    def record_files(self) -> Iterator[Path]:
        """Every record file in the directory, sorted by name (temporary files skipped)."""
        if not self.path.is_dir():
            return iter(())
        return iter(
            sorted(
                path
                for path in self.path.iterdir()
                if path.name.endswith(RECORD_SUFFIX) and not path.name.startswith(TEMP_PREFIX)
            )
        )
