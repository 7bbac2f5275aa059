"""The rollback rule's and the high-water store's refusals, each with its own message.

An operator reads these messages when a node refuses a release or stops on its store, so
each names the channel, the versions and the way out. Written from the mutation run on
tensorguard/tgsp/_rollback.py (docs/SECURITY.md §4): the other rollback tests checked
that something was refused, not which rule refused it (a store with an extra key was
refused only by luck of a later check, and a bool version was never tried).
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from tensorguard.tgsp import HighWaterMark, HighWaterStore, RollbackError
from tensorguard.tgsp._errors import HighWaterStoreError
from tensorguard.tgsp._rollback import STORE_FORMAT, check_rollback, validate_channel

DIGEST = "ab" * 32
DAMAGED = (
    "; refusing to continue because rollback protection depends on it. Restore it from a "
    "backup, or remove it deliberately to accept any signed version again"
)


@pytest.mark.parametrize(
    ("version", "digest", "message"),
    [
        (True, None, "high-water version must be an integer, got True"),
        ("3", None, "high-water version must be an integer, got '3'"),
        (-1, None, "high-water version must not be negative, got -1"),
        (3, DIGEST.upper(), "high-water package digest must be 64 lower-case hex digits"),
        (3, DIGEST[:-1], "high-water package digest must be 64 lower-case hex digits"),
    ],
)
def test_a_malformed_mark_is_refused(version: object, digest: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        HighWaterMark(version, digest)  # type: ignore[arg-type]


def test_the_rule_names_the_channel_and_the_versions() -> None:
    mark = HighWaterMark(5, DIGEST)
    with pytest.raises(RollbackError) as lower:
        check_rollback("canary", 4, DIGEST, mark)
    assert str(lower.value) == (
        "package version 4 is below the high-water mark 5 for channel 'canary'; refusing a rollback"
    )
    with pytest.raises(RollbackError) as replay:
        check_rollback("canary", 5, "cd" * 32, mark)
    assert str(replay.value) == (
        "package version 5 equals the high-water mark for channel 'canary' but it is not "
        "the package installed at that version (different or unknown SHA-256); refusing a "
        "replay. Only a higher version, or the very same package, is accepted"
    )


def test_a_misnamed_channel_is_refused_with_the_naming_rule() -> None:
    assert validate_channel("stable-2.x_y") == "stable-2.x_y"
    for name in ("Stable", "-stable", "", "a" * 65, "sta ble"):
        message = (
            f"{name!r} is not a channel name: channels are 1-64 lower-case ASCII letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            validate_channel(name)


def _store_with(tmp_path: Path, content: bytes) -> HighWaterStore:
    path = tmp_path / "high-water.json"
    path.write_bytes(content)
    return HighWaterStore(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            b'{"format": "tensorguard.high-water/v0", "channels": {}}',
            f"expected keys 'format' ({STORE_FORMAT}) and 'channels'",
        ),
        (
            b'{"format": "tensorguard.high-water/v1", "channels": {}, "extra": 1}',
            f"expected keys 'format' ({STORE_FORMAT}) and 'channels'",
        ),
        (
            b'{"format": "tensorguard.high-water/v1", "channels": []}',
            "'channels' must be an object",
        ),
        (
            b'{"format": "tensorguard.high-water/v1", "channels": {"stable": {"version": 3}}}',
            "each channel needs exactly 'version' and 'package_digest'",
        ),
        (
            b'{"format": "tensorguard.high-water/v1", "channels": {"stable": 3}}',
            "each channel needs exactly 'version' and 'package_digest'",
        ),
    ],
    ids=["old-format", "extra-key", "channels-list", "entry-keys", "entry-number"],
)
def test_a_damaged_store_names_what_is_wrong(tmp_path: Path, content: bytes, problem: str) -> None:
    store = _store_with(tmp_path, content)
    with pytest.raises(HighWaterStoreError) as refused:
        store.load()
    assert str(refused.value) == f"high-water store {store.path} is damaged ({problem})" + DAMAGED


def test_a_store_that_is_not_json_names_the_store(tmp_path: Path) -> None:
    store = _store_with(tmp_path, b"not json")
    with pytest.raises(HighWaterStoreError) as refused:
        store.load()
    message = str(refused.value)
    assert message.startswith(f"high-water store {store.path} is damaged (high-water store ")
    assert message.endswith(DAMAGED)


def test_an_unreadable_store_names_the_reason(tmp_path: Path) -> None:
    store = HighWaterStore(tmp_path)  # a directory where the file should be
    with pytest.raises(HighWaterStoreError) as refused:
        store.load()
    assert str(refused.value) == (
        f"cannot read high-water store {tmp_path}: {os.strerror(21)}"  # EISDIR
    )
    assert repr(store) == f"HighWaterStore(path={str(tmp_path)!r})"


def test_the_store_refuses_to_lower_a_mark_naming_its_channel(tmp_path: Path) -> None:
    store = HighWaterStore(tmp_path / "high-water.json")
    store.record("edge", HighWaterMark(3, DIGEST))
    with pytest.raises(RollbackError, match="for channel 'edge'; refusing a rollback"):
        store.record("edge", HighWaterMark(2, DIGEST))


def test_the_store_directory_is_private(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        store = HighWaterStore(tmp_path / "node" / "state" / "high-water.json")
        store.record("stable", HighWaterMark(1, DIGEST))
    finally:
        os.umask(old_umask)
    for directory in (tmp_path / "node", tmp_path / "node" / "state"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_a_store_that_cannot_be_saved_names_the_store(tmp_path: Path) -> None:
    """Readable as "no marks yet" (its directory is a dangling link), but not writable."""
    (tmp_path / "state").symlink_to(tmp_path / "nowhere")
    store = HighWaterStore(tmp_path / "state" / "high-water.json")
    assert store.load() == {}
    with pytest.raises(HighWaterStoreError) as refused:
        store.record("stable", HighWaterMark(1, DIGEST))
    assert str(refused.value).startswith(
        f"cannot save high-water store {store.path}: cannot create directory {tmp_path / 'state'}"
    )
