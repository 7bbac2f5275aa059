"""Fetching an announced package into the agent's private download directory.

Sources: an ``http(s)://`` URI on the node's own fleet service (a signed, resumable
download, :mod:`tensorguard.fleet.download`; needs ``service_url`` and
``node_key_file``), a ``file://`` URI without a host (or with ``localhost``) or an
absolute path. Any other scheme is refused with ``unsupported_location``. The copy is
hashed while it is made and must have the size and SHA-256 the announcement states;
the package's own signature is checked later and is what decides whether it is
installed.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

from tensorguard.durable import DurableWriteError, atomic_copy, ensure_directory
from tensorguard.fleet.download import ExpectedPackage, download_package
from tensorguard.fleet.install import PARTIAL_SUFFIX
from tensorguard.fleet.messages import InstallReason, ReleaseAnnouncement
from tensorguard.fleet.rejections import failed, rejected
from tensorguard.service.client import NodeClient


def local_source(location: str) -> Path:
    """The local path a ``file://`` URI or absolute path names; refuse anything else."""
    parts = urlsplit(location)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise rejected(
                InstallReason.UNSUPPORTED_LOCATION,
                f"file URI {location!r} names host {parts.netloc!r}; only local files "
                "(file:///path) can be fetched",
            )
        path = Path(url2pathname(unquote(parts.path)))
    elif parts.scheme == "" and location.startswith("/"):
        path = Path(location)
    else:
        scheme = parts.scheme or "(none)"
        raise rejected(
            InstallReason.UNSUPPORTED_LOCATION,
            f"package location scheme {scheme!r} is not supported; this agent fetches "
            "http(s):// URIs on its fleet service, file:// URIs and absolute local paths only",
        )
    if not path.is_absolute() or ".." in path.parts:
        raise rejected(
            InstallReason.UNSUPPORTED_LOCATION,
            f"package location {location!r} is not an absolute, normalised path",
        )
    return path


HTTP_SCHEMES = ("http", "https")


def fetch_package(
    announcement: ReleaseAnnouncement,
    downloads: Path,
    max_bytes: int,
    service: NodeClient | None = None,
) -> Path:
    """Fetch the announced package into ``downloads``; check its size and SHA-256.

    ``http(s)`` locations are downloaded from ``service`` (resuming a partial file left
    by an earlier attempt); without a service they are refused.
    """
    if announcement.size > max_bytes:
        raise rejected(
            InstallReason.DIGEST_MISMATCH,
            f"announced package size {announcement.size} exceeds this node's limit of "
            f"{max_bytes} bytes",
        )
    destination = downloads / f"{announcement.channel}-{announcement.version}.tgsp"
    if urlsplit(announcement.location).scheme in HTTP_SCHEMES:
        return _download(announcement, downloads, destination, service)
    source = local_source(announcement.location)
    try:
        size = source.stat().st_size
    except OSError as exc:
        raise failed(
            InstallReason.FETCH_FAILED,
            f"cannot read package {source}: {exc.strerror or exc}; check that the registry "
            "is mounted on this node",
        ) from exc
    if size != announcement.size:
        raise rejected(
            InstallReason.DIGEST_MISMATCH,
            f"package {source} is {size} bytes but the announcement says {announcement.size}",
        )
    try:
        ensure_directory(downloads)
        digest, copied = atomic_copy(source, destination)
    except DurableWriteError as exc:
        raise failed(InstallReason.FETCH_FAILED, f"cannot fetch {source}: {exc}") from exc
    if digest != announcement.digest or copied != announcement.size:
        destination.unlink(missing_ok=True)
        raise rejected(
            InstallReason.DIGEST_MISMATCH,
            f"package {source} has SHA-256 {digest}, but the announcement says "
            f"{announcement.digest}",
        )
    return destination


def _download(
    announcement: ReleaseAnnouncement,
    downloads: Path,
    destination: Path,
    service: NodeClient | None,
) -> Path:
    if service is None:
        raise rejected(
            InstallReason.UNSUPPORTED_LOCATION,
            f"package location {announcement.location[:200]!r} is on a fleet service, but "
            "this agent has none configured; set service_url and node_key_file in agent.yaml",
        )
    partial = downloads / (
        f"{announcement.channel}-{announcement.version}-{announcement.digest[:16]}{PARTIAL_SUFFIX}"
    )
    try:
        ensure_directory(downloads)
        for stale in downloads.glob(f"*{PARTIAL_SUFFIX}"):
            if stale != partial:
                stale.unlink()
    except (DurableWriteError, OSError) as exc:
        raise failed(InstallReason.FETCH_FAILED, f"cannot prepare {downloads}: {exc}") from exc
    expected = ExpectedPackage(size=announcement.size, digest=announcement.digest)
    return download_package(announcement.location, destination, partial, expected, service)
