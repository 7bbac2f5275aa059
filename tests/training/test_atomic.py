"""Atomic directory replacement: all or nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.training.atomic import atomic_directory
from tensorguard.training.errors import TrainingError


def test_creates_a_new_directory(tmp_path: Path) -> None:
    target = tmp_path / "nested" / "out"
    with atomic_directory(target) as staging:
        assert staging.parent == target.parent
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert sorted(path.name for path in target.parent.iterdir()) == ["out"]


def test_replaces_an_existing_directory_completely(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with atomic_directory(target) as staging:
        (staging / "fresh.txt").write_text("new")
    assert sorted(path.name for path in target.iterdir()) == ["fresh.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_failure_leaves_the_previous_directory_and_no_debris(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "kept.txt").write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_directory(target) as staging:
        (staging / "half.txt").write_text("partial")
        raise RuntimeError("boom")
    assert sorted(path.name for path in target.iterdir()) == ["kept.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]


def test_refuses_to_replace_a_file(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(TrainingError, match="is not a directory"), atomic_directory(target):
        pass
    assert target.read_text() == "a file"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
