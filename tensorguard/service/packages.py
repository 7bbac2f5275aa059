"""Registry packages served to enrolled nodes: find a release's file and stream a range.

The service reads the same directory registry the pipeline publishes to
(``TG_REGISTRY_ROOT``); a release exists when the registry index lists it. The package's
entity tag is its recorded SHA-256 (``ETag: "<digest>"``), so a resumed download asks
for the rest of exactly the bytes it began with (``If-Range``). The file is not hashed
per request: the node checks the digest while it downloads, and the package signature
decides whether it is installed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tensorguard.fleet.byte_ranges import ByteRange
from tensorguard.fleet.errors import RegistryCorruptError
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.service.errors import UnknownPackageError

CHUNK_BYTES = 256 * 1024


@dataclass(frozen=True)
class PackageFile:
    """A published package: its file, size and SHA-256 as the registry index records them."""

    path: Path
    size: int
    digest: str


class PackageStore:
    """Looks up published packages in the registry at ``root``."""

    def __init__(self, root: Path) -> None:
        self.registry = LocalRegistry(root)

    def find(self, channel: str, version: int) -> PackageFile:
        """The package of ``channel`` version ``version``, or :class:`UnknownPackageError`.

        Raises :class:`RegistryCorruptError` when the file is missing or its size is not
        the recorded one (it was changed after publishing).
        """
        record = next((r for r in self.registry.releases(channel) if r.version == version), None)
        if record is None:
            raise UnknownPackageError(f"the registry has no release {channel!r} version {version}")
        path = self.registry.package_path(record)
        # the message leaves out the server's path: it reaches the client
        size = self.registry.package_size(record, shown_as="its package file")
        if size != record.size:
            raise RegistryCorruptError(
                f"release {channel} v{version}: the package file is {size} bytes but the "
                f"index records {record.size}; it was modified after publishing"
            )
        return PackageFile(path=path, size=record.size, digest=record.digest)


def read_range(path: Path, byte_range: ByteRange) -> Iterator[bytes]:
    """The bytes of ``byte_range`` of the file, in chunks (the file is opened on first use)."""
    remaining = byte_range.length
    with path.open("rb") as handle:
        handle.seek(byte_range.start)
        while remaining > 0:
            chunk = handle.read(min(CHUNK_BYTES, remaining))
            if not chunk:
                raise RegistryCorruptError(f"package {path.name} ended early while being served")
            remaining -= len(chunk)
            yield chunk
