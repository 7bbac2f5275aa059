"""The one rollback rule, and the node's persistent high-water store.

A node's *high-water mark* for a channel is the version it installed last on that
channel and the SHA-256 of that package file. A package is acceptable on the channel
only if

* its version is **strictly greater** than the mark, or
* its version **equals** the mark **and** its package digest equals the mark's digest
  (the same file again, e.g. a retained announcement seen after a restart).

Everything else is a :class:`~tensorguard.tgsp._errors.RollbackError`: a lower version is a
rollback, and a different package carrying the installed version number is a replay or
an equivocation. ``tgsp verify``/``tgsp open`` and the edge agent all call
:func:`check_rollback`; no caller re-implements the comparison.

:class:`HighWaterStore` keeps the marks in one JSON file
(``tensorguard.high-water/v1``), replaced atomically through :mod:`tensorguard.durable`,
readable only by its owner. A damaged store stops the caller (fail closed) instead of
being reset, and a mark never moves down.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tensorguard.codec import CodecError, canonical_json, parse_json_object
from tensorguard.durable import DurableWriteError, atomic_write_bytes, ensure_directory
from tensorguard.tgsp._errors import HighWaterStoreError, RollbackError

STORE_FORMAT = "tensorguard.high-water/v1"
STORE_FILE_MODE = 0o600
CHANNEL_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HighWaterMark:
    """The last version installed on a channel and the SHA-256 of its package file.

    ``package_digest`` may be ``None`` when only the number is known (a mark typed on
    the command line); then no package of that version is acceptable.
    """

    version: int
    package_digest: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.version, bool) or not isinstance(self.version, int):
            raise ValueError(f"high-water version must be an integer, got {self.version!r}")
        if self.version < 0:
            raise ValueError(f"high-water version must not be negative, got {self.version}")
        if self.package_digest is not None and not _SHA256_HEX.fullmatch(self.package_digest):
            raise ValueError("high-water package digest must be 64 lower-case hex digits")


def check_rollback(
    channel: str, version: int, package_digest: str | None, mark: HighWaterMark | None
) -> None:
    """Apply the rollback rule (module docstring); raise :class:`RollbackError` if refused.

    ``package_digest`` is the SHA-256 of the candidate package file; it is consulted only
    when ``version`` equals the mark, so callers may pass ``None`` when they know the
    versions differ.
    """
    if mark is None or version > mark.version:
        return
    if version < mark.version:
        raise RollbackError(
            f"package version {version} is below the high-water mark {mark.version} for "
            f"channel {channel!r}; refusing a rollback"
        )
    if mark.package_digest is not None and package_digest == mark.package_digest:
        return
    raise RollbackError(
        f"package version {version} equals the high-water mark for channel {channel!r} but "
        "it is not the package installed at that version (different or unknown SHA-256); "
        "refusing a replay. Only a higher version, or the very same package, is accepted"
    )


def validate_channel(channel: str) -> str:
    """Return ``channel`` if it is a valid TGSP channel name, else raise ``ValueError``."""
    if not CHANNEL_PATTERN.fullmatch(channel):
        raise ValueError(
            f"{channel!r} is not a channel name: channels are 1-64 lower-case ASCII letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return channel


class HighWaterStore:
    """A node's high-water marks, one per channel, in one atomically replaced JSON file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"HighWaterStore(path={str(self.path)!r})"

    def load(self) -> dict[str, HighWaterMark]:
        """Every channel's mark; empty when the store does not exist yet."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise HighWaterStoreError(
                f"cannot read high-water store {self.path}: {exc.strerror or exc}"
            ) from exc
        try:
            document = parse_json_object(data, what=f"high-water store {self.path}")
            if document.get("format") != STORE_FORMAT or set(document) != {"format", "channels"}:
                raise ValueError(f"expected keys 'format' ({STORE_FORMAT}) and 'channels'")
            channels = document["channels"]
            if not isinstance(channels, dict):
                raise ValueError("'channels' must be an object")
            return {
                validate_channel(channel): _mark_from_json(entry)
                for channel, entry in channels.items()
            }
        except (CodecError, ValueError, TypeError, KeyError) as exc:
            raise HighWaterStoreError(
                f"high-water store {self.path} is damaged ({exc}); refusing to continue "
                "because rollback protection depends on it. Restore it from a backup, or "
                "remove it deliberately to accept any signed version again"
            ) from exc

    def get(self, channel: str) -> HighWaterMark | None:
        """The mark of ``channel``, or ``None`` before the first install on it."""
        return self.load().get(channel)

    def record(self, channel: str, mark: HighWaterMark) -> None:
        """Raise ``channel``'s mark to ``mark``; refuse (RollbackError) to lower it."""
        marks = self.load()
        check_rollback(channel, mark.version, mark.package_digest, marks.get(channel))
        marks[validate_channel(channel)] = mark
        document = {
            "format": STORE_FORMAT,
            "channels": {name: _mark_to_json(value) for name, value in sorted(marks.items())},
        }
        try:
            ensure_directory(self.path.parent, mode=0o700)
            atomic_write_bytes(self.path, canonical_json(document) + b"\n", mode=STORE_FILE_MODE)
        except DurableWriteError as exc:
            raise HighWaterStoreError(f"cannot save high-water store {self.path}: {exc}") from exc


def _mark_from_json(entry: object) -> HighWaterMark:
    if not isinstance(entry, Mapping) or set(entry) != {"version", "package_digest"}:
        raise ValueError("each channel needs exactly 'version' and 'package_digest'")
    return HighWaterMark(entry["version"], entry["package_digest"])


def _mark_to_json(mark: HighWaterMark) -> dict[str, object]:
    return {"version": mark.version, "package_digest": mark.package_digest}
