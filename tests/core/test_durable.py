"""tensorguard.durable: all-or-nothing writes of files, directories and links."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from tensorguard import durable
from tensorguard.durable import (
    TEMP_PREFIX,
    DestinationExistsError,
    DurableWriteError,
    atomic_copy,
    atomic_directory,
    atomic_file,
    atomic_symlink,
    atomic_write_bytes,
    ensure_directory,
    fsync_directory,
    fsync_file,
    fsync_tree,
)
from tensorguard.errors import TensorGuardError


def names(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


# --- files ------------------------------------------------------------------------------


def test_write_bytes_creates_and_replaces_a_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert names(tmp_path) == ["state.json"]


def test_failure_inside_the_block_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "index.json"
    target.write_bytes(b"old")

    def write_then_fail() -> None:
        with atomic_file(target) as handle:
            handle.write(b"half-written")
            raise RuntimeError("writer failed")

    with pytest.raises(RuntimeError, match="writer failed"):
        write_then_fail()
    assert target.read_bytes() == b"old"
    assert names(tmp_path) == ["index.json"]


def test_the_handle_can_seek_back_before_publishing(tmp_path: Path) -> None:
    target = tmp_path / "package.bin"
    with atomic_file(target) as handle:
        handle.seek(4)
        handle.write(b"body")
        handle.seek(0)
        handle.write(b"head")
    assert target.read_bytes() == b"headbody"


def test_no_overwrite_refuses_an_existing_file_and_leaves_it(tmp_path: Path) -> None:
    target = tmp_path / "key.tgkey"
    atomic_write_bytes(target, b"original", overwrite=False)
    with pytest.raises(DestinationExistsError, match="already exists"):
        atomic_write_bytes(target, b"intruder", overwrite=False)
    assert target.read_bytes() == b"original"
    assert names(tmp_path) == ["key.tgkey"]


def test_file_mode_is_applied(tmp_path: Path) -> None:
    target = tmp_path / "secret"
    atomic_write_bytes(target, b"x", mode=0o600)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_missing_directory_is_a_durable_write_error(tmp_path: Path) -> None:
    with pytest.raises(DurableWriteError, match="directory exists and is writable"):
        atomic_write_bytes(tmp_path / "absent" / "f", b"x")


def test_copy_returns_digest_and_size_of_the_bytes_written(tmp_path: Path) -> None:
    source = tmp_path / "src.bin"
    payload = os.urandom(durable.COPY_CHUNK + 17)
    source.write_bytes(payload)
    digest, size = atomic_copy(source, tmp_path / "dst.bin")
    assert (tmp_path / "dst.bin").read_bytes() == payload
    assert (digest, size) == (hashlib.sha256(payload).hexdigest(), len(payload))


def test_copy_of_a_missing_source_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(DurableWriteError, match="cannot read"):
        atomic_copy(tmp_path / "absent", tmp_path / "dst")
    assert names(tmp_path) == []


def test_errors_belong_to_the_tensorguard_hierarchy() -> None:
    assert issubclass(DestinationExistsError, DurableWriteError)
    assert issubclass(DurableWriteError, TensorGuardError)


# --- directories ------------------------------------------------------------------------


def test_directory_is_created_with_missing_parents(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "out"
    with atomic_directory(target) as staging:
        assert staging.parent == target.parent
        assert staging.name.startswith(TEMP_PREFIX)
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert names(target.parent) == ["out"]
    assert stat.S_IMODE(target.stat().st_mode) == durable.DEFAULT_DIRECTORY_MODE


def test_success_replaces_the_whole_directory(tmp_path: Path) -> None:
    target = tmp_path / "artifact"
    with atomic_directory(target) as staging:
        (staging / "old.bin").write_bytes(b"old")
    with atomic_directory(target) as staging:
        (staging / "new.bin").write_bytes(b"new")
    assert names(target) == ["new.bin"]
    assert names(tmp_path) == ["artifact"]


def test_failure_leaves_the_previous_directory_and_no_debris(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "kept.txt").write_text("old")

    def fill_then_fail() -> None:
        with atomic_directory(target) as staging:
            (staging / "half.txt").write_text("partial")
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        fill_then_fail()
    assert names(target) == ["kept.txt"]
    assert names(tmp_path) == ["out"]


def test_failed_swap_puts_the_previous_directory_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "kept.txt").write_text("old")
    real_replace = os.replace

    def refuse_staging(source: str | Path, destination: str | Path) -> None:
        if Path(source).name.startswith(f"{TEMP_PREFIX}out-"):
            raise OSError(28, "No space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(durable.os, "replace", refuse_staging)
    with pytest.raises(DurableWriteError, match="No space left"), atomic_directory(target) as s:
        (s / "new.txt").write_text("new")
    assert names(target) == ["kept.txt"]
    assert names(tmp_path) == ["out"]


@pytest.mark.parametrize("replace", [True, False])
def test_a_file_or_link_in_the_way_is_refused(tmp_path: Path, replace: bool) -> None:
    target = tmp_path / "out"
    target.write_text("a file")
    with (
        pytest.raises(DurableWriteError, match="is not a directory"),
        atomic_directory(target, replace=replace),
    ):
        pass
    assert target.read_text() == "a file"
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with (
        pytest.raises(DurableWriteError, match="is not a directory"),
        atomic_directory(link, replace=replace),
    ):
        pass
    assert names(tmp_path) == ["link", "out"]


def test_no_replace_refuses_an_existing_directory(tmp_path: Path) -> None:
    target = tmp_path / "release"
    target.mkdir()
    with pytest.raises(DestinationExistsError), atomic_directory(target, replace=False):
        pass
    assert names(target) == []
    assert names(tmp_path) == ["release"]


def test_no_replace_refuses_a_directory_that_appears_meanwhile(tmp_path: Path) -> None:
    target = tmp_path / "release"

    def publish_while_another_writer_creates_it() -> None:
        with atomic_directory(target, replace=False) as staging:
            (staging / "new").write_text("new")
            target.mkdir()
            (target / "theirs").write_text("theirs")

    with pytest.raises(DestinationExistsError, match="appeared"):
        publish_while_another_writer_creates_it()
    assert names(target) == ["theirs"]
    assert names(tmp_path) == ["release"]


# --- links and flushing -----------------------------------------------------------------


def test_symlink_is_switched_in_place(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    link = tmp_path / "current"
    atomic_symlink("v1", link)
    atomic_symlink("v2", link)
    assert os.readlink(link) == "v2"
    assert names(tmp_path) == ["current", "v1", "v2"]


def test_symlink_over_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / "current").mkdir()
    with pytest.raises(DurableWriteError, match="is not a"):
        atomic_symlink("v1", tmp_path / "current")
    assert names(tmp_path) == ["current"]


def test_ensure_directory_creates_parents_and_refuses_a_file(tmp_path: Path) -> None:
    ensure_directory(tmp_path / "a" / "b" / "c")
    assert (tmp_path / "a" / "b" / "c").is_dir()
    ensure_directory(tmp_path / "a" / "b" / "c")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DurableWriteError, match="cannot create directory"):
        ensure_directory(tmp_path / "file" / "sub")


def test_fsync_helpers_accept_real_entries_and_report_missing_ones(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"x")
    (tree / "link").symlink_to("/nonexistent")
    fsync_tree(tree)
    fsync_file(tree / "sub" / "f")
    fsync_directory(tree)
    with pytest.raises(DurableWriteError, match="cannot flush"):
        fsync_file(tmp_path / "absent")
    with pytest.raises(DurableWriteError, match="cannot flush directory"):
        fsync_directory(tree / "sub" / "f")
