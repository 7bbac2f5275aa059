"""A local directory registry of release packages, crash-safe and monotonic per channel.

Layout under the registry root::

    index.json                      every release, per channel (the source of truth)
    .lock                           advisory lock held by publishers and recovery
    packages/<channel>/<channel>-<version><suffix>   the published package files
    freshness/<channel>.json        the channel's signed minimum version
                                    (:mod:`tensorguard.tgsp._freshness`)

Publishing copies the package into ``packages/<channel>/`` through a temporary file
(fsync, rename, directory fsync) and only then replaces ``index.json`` the same way.
A release exists exactly when the index lists it; a crash at any point leaves the
index either as it was or with the new release complete. Leftovers of an interrupted
publish (temporary files, a package file the index does not list) are removed by
:meth:`LocalRegistry.recover`, which every publish runs first under the lock.

Versions are integers and strictly increase per channel: publishing a version equal
to or lower than the channel's highest is refused.

Each release records the round it carries. A release of a round older than the round
of the channel's latest release (a backfill) is published as an *archived* entry: it
gets the next version and stays downloadable, but it never becomes the channel's
:meth:`LocalRegistry.latest` and is not announced to the fleet. Round ids compare as
text; the pipeline's round ids are ISO-8601 dates, whose text order is their time order.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from tensorguard._codec_schema import Sha256Hex
from tensorguard.digest import sha256_file
from tensorguard.durable import (
    TEMP_PREFIX,
    DurableWriteError,
    atomic_copy,
    atomic_write_bytes,
    ensure_directory,
)
from tensorguard.file_lock import held_exclusively
from tensorguard.fleet.errors import (
    RegistryCorruptError,
    RegistryError,
    ReleaseVersionError,
)
from tensorguard.fleet.names import validate_name
from tensorguard.tgsp import DEFAULT_VALIDITY_SECONDS, issue_freshness

if TYPE_CHECKING:
    from tensorguard.crypto import CompositeSigner

INDEX_FORMAT: Final = "tensorguard.registry-index/v1"
INDEX_NAME = "index.json"
LOCK_NAME = ".lock"
PACKAGES_DIR = "packages"
FRESHNESS_DIR = "freshness"
DEFAULT_SUFFIX = ".tgsp"


class ReleaseRecord(BaseModel):
    """One published package: where it is, what it hashes to, and when it was published."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: str
    version: Annotated[int, Field(ge=1)]
    digest: Sha256Hex
    size: Annotated[int, Field(ge=0)]
    published_at: datetime
    path: str
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    round_id: str | None = None
    archived: bool = False
    # a canary release rolled back (tensorguard.fleet.rollout): never the latest again
    revoked: bool = False


class RegistryIndex(BaseModel):
    """The whole registry: releases per channel, in increasing version order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["tensorguard.registry-index/v1"] = INDEX_FORMAT
    channels: dict[str, tuple[ReleaseRecord, ...]] = Field(default_factory=dict)


def _latest_of(releases: Sequence[ReleaseRecord]) -> ReleaseRecord | None:
    """The highest-version record of ``releases`` (version order) that is neither archived
    nor revoked."""
    return next(
        (record for record in reversed(releases) if not (record.archived or record.revoked)),
        None,
    )


def is_backfill(round_id: str | None, latest: ReleaseRecord | None) -> bool:
    """True when ``round_id`` is older than the round of the channel's ``latest`` release
    (so publishing it must not make it the latest); False when either round is unknown."""
    return (
        round_id is not None
        and latest is not None
        and latest.round_id is not None
        and round_id < latest.round_id
    )


class LocalRegistry:
    """A registry in a local directory (see the module docstring for its guarantees)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def __repr__(self) -> str:
        return f"LocalRegistry(root={str(self.root)!r})"

    @property
    def index_path(self) -> Path:
        """Path of the index file."""
        return self.root / INDEX_NAME

    def read_index(self) -> RegistryIndex:
        """Return the current index (empty for a registry never published to)."""
        try:
            data = self.index_path.read_bytes()
        except FileNotFoundError:
            return RegistryIndex()
        except OSError as exc:
            raise RegistryError(
                f"cannot read registry index {self.index_path}: {exc.strerror or exc}"
            ) from exc
        try:
            return RegistryIndex.model_validate_json(data)
        except ValidationError as exc:
            raise RegistryCorruptError(
                f"registry index {self.index_path} does not validate ({exc.error_count()} "
                "problems); it was edited by hand or by another tool. Restore it from a "
                "backup; TensorGuard never writes a partial index"
            ) from exc

    def channels(self) -> list[str]:
        """Channels with at least one release, sorted."""
        return sorted(self.read_index().channels)

    def releases(self, channel: str) -> list[ReleaseRecord]:
        """Releases on ``channel`` in increasing version order."""
        validate_name("channel", channel)
        return list(self.read_index().channels.get(channel, ()))

    def latest(self, channel: str) -> ReleaseRecord | None:
        """The channel's latest release: its highest-version entry that is not archived
        (an archived entry is a backfilled older round), or None if there is none."""
        return _latest_of(self.releases(channel))

    def highest_version(self, channel: str) -> int:
        """The highest version on ``channel``, archived entries included (0 if none)."""
        releases = self.releases(channel)
        return releases[-1].version if releases else 0

    def package_path(self, record: ReleaseRecord) -> Path:
        """Absolute path of a release's package file."""
        return self.root / record.path

    def location(self, record: ReleaseRecord) -> str:
        """A ``file://`` URI of the package, as announced to the fleet."""
        return self.package_path(record).as_uri()

    def package_size(self, record: ReleaseRecord, *, shown_as: str | None = None) -> int:
        """The size on disk of a release's package file.

        Raises :class:`RegistryCorruptError` when the file cannot be read; the message names
        the file ``shown_as`` (default: ``package <its path>``).
        """
        path = self.package_path(record)
        try:
            return path.stat().st_size
        except OSError as exc:
            raise RegistryCorruptError(
                f"release {record.channel} v{record.version}: "
                f"{shown_as or f'package {path}'} is unreadable ({exc.strerror or exc})"
            ) from exc

    def verify(self, record: ReleaseRecord) -> None:
        """Check that the package on disk has the recorded size and SHA-256."""
        path = self.package_path(record)
        size = self.package_size(record)
        if size != record.size or sha256_file(path) != record.digest:
            raise RegistryCorruptError(
                f"release {record.channel} v{record.version}: package {path} does not match "
                "the size and SHA-256 recorded in the index; it was modified after publishing"
            )

    def publish(
        self,
        package_path: Path,
        channel: str,
        version: int,
        metadata: Mapping[str, JsonValue] | None = None,
        *,
        round_id: str | None = None,
    ) -> ReleaseRecord:
        """Publish ``package_path`` as ``version`` on ``channel``; return its record.

        Raises :class:`ReleaseVersionError` unless ``version`` exceeds the channel's
        highest version. ``round_id`` is the round the package carries: when it is
        older than the round of the channel's latest release, the record is
        ``archived`` (see the module docstring); the decision is taken under the
        publishers' lock. The package file is copied (never moved), hashed while
        copied, and made durable before the index names it.
        """
        validate_name("channel", channel)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ReleaseVersionError(
                f"release version must be a positive integer, got {version!r}"
            )
        if not package_path.is_file():
            raise RegistryError(
                f"package {package_path} does not exist or is not a regular file; build the "
                "package before publishing it"
            )
        with self._locked():
            self._recover_locked()
            index = self.read_index()
            existing = index.channels.get(channel, ())
            if existing and version <= existing[-1].version:
                raise ReleaseVersionError(
                    f"channel {channel!r} already has version {existing[-1].version}; "
                    f"refusing to publish version {version}. Versions must strictly increase "
                    f"per channel: publish version {existing[-1].version + 1} or higher"
                )
            relative = self._package_relative_path(package_path, channel, version)
            destination = self.root / relative
            try:
                ensure_directory(destination.parent)
                digest, size = atomic_copy(package_path, destination)
            except DurableWriteError as exc:
                raise RegistryError(f"cannot publish {package_path}: {exc}") from exc
            record = ReleaseRecord(
                channel=channel,
                version=version,
                digest=digest,
                size=size,
                published_at=datetime.now(UTC),
                path=relative,
                metadata=dict(metadata or {}),
                round_id=round_id,
                archived=is_backfill(round_id, _latest_of(existing)),
            )
            channels = dict(index.channels)
            channels[channel] = (*existing, record)
            self._write_index(RegistryIndex(channels=channels))
            return record

    def revoke(self, channel: str, version: int) -> ReleaseRecord:
        """Mark ``version`` of ``channel`` revoked (a rolled-back canary): it stays listed,
        its version stays used, but it is never the channel's latest again. Idempotent;
        raises :class:`RegistryError` for a release that does not exist."""
        with self._locked():
            index = self.read_index()
            existing = index.channels.get(channel, ())
            if not any(record.version == version for record in existing):
                raise RegistryError(f"channel {channel!r} has no version {version} to revoke")
            updated = tuple(
                record.model_copy(update={"revoked": True}) if record.version == version else record
                for record in existing
            )
            self._write_index(RegistryIndex(channels={**index.channels, channel: updated}))
            return next(record for record in updated if record.version == version)

    def publish_freshness(
        self,
        channel: str,
        signer: CompositeSigner,
        *,
        now: int | None = None,
        valid_for_seconds: int = DEFAULT_VALIDITY_SECONDS,
    ) -> bytes:
        """Sign and store the channel's freshness statement; return the document.

        Its minimum version is the channel's latest (non-archived) release, so a node
        that checks it installs nothing older. Run after every publish and again before
        the statement expires (``valid_for_seconds``, default 7 days).
        """
        validate_name("channel", channel)
        with self._locked():
            latest = _latest_of(self.read_index().channels.get(channel, ()))
            if latest is None:
                raise RegistryError(
                    f"channel {channel!r} has no release; publish one before issuing its "
                    "freshness statement"
                )
            moment = int(datetime.now(UTC).timestamp()) if now is None else now
            document = issue_freshness(
                channel,
                latest.version,
                signer,
                now=moment,
                valid_for_seconds=valid_for_seconds,
            )
            path = self.root / FRESHNESS_DIR / f"{channel}.json"
            try:
                ensure_directory(path.parent)
                atomic_write_bytes(path, document)
            except DurableWriteError as exc:
                raise RegistryError(f"cannot store the freshness statement: {exc}") from exc
        return document

    def freshness_document(self, channel: str) -> bytes | None:
        """The channel's signed freshness statement, or None if none was issued."""
        validate_name("channel", channel)
        try:
            return (self.root / FRESHNESS_DIR / f"{channel}.json").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RegistryError(
                f"cannot read the freshness statement of {channel!r}: {exc.strerror or exc}"
            ) from exc

    def recover(self) -> list[Path]:
        """Remove leftovers of interrupted publishes; return the paths removed.

        Leftovers are temporary files (``.tmp-*``) and package files the index does not
        list. Safe to run at any time: it takes the publishers' lock.
        """
        with self._locked():
            return self._recover_locked()

    @staticmethod
    def _package_relative_path(package_path: Path, channel: str, version: int) -> str:
        suffix = "".join(package_path.suffixes[-1:]) or DEFAULT_SUFFIX
        return f"{PACKAGES_DIR}/{channel}/{channel}-{version}{suffix}"

    def _write_index(self, index: RegistryIndex) -> None:
        document = index.model_dump(mode="json")
        data = json.dumps(document, indent=2, sort_keys=True).encode("utf-8") + b"\n"
        try:
            atomic_write_bytes(self.index_path, data)
        except DurableWriteError as exc:
            raise RegistryError(f"cannot update the registry index: {exc}") from exc

    def _recover_locked(self) -> list[Path]:
        referenced = {
            self.root / record.path
            for records in self.read_index().channels.values()
            for record in records
        }
        removed: list[Path] = []
        candidates = list(self.root.glob(f"{TEMP_PREFIX}*"))
        candidates.extend(self.root.glob(f"{FRESHNESS_DIR}/{TEMP_PREFIX}*"))
        packages = self.root / PACKAGES_DIR
        if packages.is_dir():
            candidates.extend(path for path in packages.glob("*/*") if path not in referenced)
        for path in sorted(candidates):
            if path.is_file() or path.is_symlink():
                path.unlink()
                removed.append(path)
        return removed

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            ensure_directory(self.root)
        except DurableWriteError as exc:
            raise RegistryError(f"cannot open the registry at {self.root}: {exc}") from exc
        try:
            lock_file = (self.root / LOCK_NAME).open("a+b")
        except OSError as exc:
            raise RegistryError(
                f"cannot open the registry at {self.root}: {exc.strerror or exc}; check that "
                "the path is a writable directory"
            ) from exc
        with held_exclusively(lock_file):
            yield
