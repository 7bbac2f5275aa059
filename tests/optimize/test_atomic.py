"""atomic_output_dir: all-or-nothing publication of an artifact directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.optimize.atomic import AtomicPublishError, atomic_output_dir


def test_failed_write_leaves_the_previous_artifact_intact(tmp_path: Path) -> None:
    destination = tmp_path / "artifact"
    with atomic_output_dir(destination) as staging:
        (staging / "weights.bin").write_bytes(b"first")
    with pytest.raises(RuntimeError, match="writer failed"):
        with atomic_output_dir(destination) as staging:
            (staging / "weights.bin").write_bytes(b"half-written")
            raise RuntimeError("writer failed")
    assert (destination / "weights.bin").read_bytes() == b"first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_success_replaces_the_whole_directory(tmp_path: Path) -> None:
    destination = tmp_path / "artifact"
    with atomic_output_dir(destination) as staging:
        (staging / "old.bin").write_bytes(b"old")
    with atomic_output_dir(destination) as staging:
        (staging / "new.bin").write_bytes(b"new")
    assert sorted(p.name for p in destination.iterdir()) == ["new.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artifact"]


def test_a_file_in_the_way_is_refused(tmp_path: Path) -> None:
    destination = tmp_path / "artifact"
    destination.write_text("not a directory")
    with pytest.raises(AtomicPublishError, match="is not a directory"):
        with atomic_output_dir(destination):
            pass
    assert destination.read_text() == "not a directory"
