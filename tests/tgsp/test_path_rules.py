"""Each archive path rule refuses with its own reason, error messages stay bounded, and
the set rules hold at any depth.

The reason is what a publisher reads when a build is refused (``unsafe path 'a//b':
component '' is not a plain name``), so each rule is checked by its full message. Written
from the mutation run on tensorguard/tgsp/_paths.py (docs/SECURITY.md §4): the other path
tests only checked that a path is refused, and a rule that refused for the wrong reason
(an absolute path caught as an empty component) went unnoticed.
"""

from __future__ import annotations

import pytest

from tensorguard.tgsp import CaseCollisionError, DuplicatePathError, UnsafePathError
from tensorguard.tgsp._paths import check_path_set, is_windows_reserved, validate_archive_path


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("", "empty path"),
        ("bad\udc80name", "not valid Unicode"),
        ("cafe\u0301.bin", "not in Unicode NFC form; rename the file"),
        ("/etc/passwd", "absolute path"),
        ("a\\b", "backslash separator"),
        ("C:evil", "':' (drive letter or stream syntax)"),
        ("a\x00b", "control or invisible format character (e.g. bidi override)"),
        ("a\u202eb", "control or invisible format character (e.g. bidi override)"),
        ("a//b", "component '' is not a plain name"),
        ("a/./b", "component '.' is not a plain name"),
        ("a/../b", "component '..' is not a plain name"),
        ("a /b", "component ends in a space or dot"),
        ("dir/name.", "component ends in a space or dot"),
        ("dir/NUL.txt", "component 'NUL.txt' is a Windows device name"),
    ],
)
def test_each_rule_refuses_with_its_own_reason(path: str, reason: str) -> None:
    with pytest.raises(UnsafePathError) as refused:
        validate_archive_path(path)
    assert str(refused.value) == f"unsafe path {path!r}: {reason}"


def test_a_long_path_is_quoted_only_up_to_200_characters() -> None:
    path = "a" * 1500
    with pytest.raises(UnsafePathError) as refused:
        validate_archive_path(path)
    assert str(refused.value) == f"unsafe path {path[:200]!r}: longer than 1024 bytes"


def test_set_errors_quote_each_path_only_up_to_200_characters() -> None:
    path = "x" * 300
    with pytest.raises(DuplicatePathError) as duplicate:
        check_path_set([path, path])
    assert str(duplicate.value) == f"duplicate path {path[:200]!r}"
    with pytest.raises(CaseCollisionError) as collision:
        check_path_set([path.upper(), path])
    assert str(collision.value) == (
        f"paths {path.upper()[:200]!r} and {path[:200]!r} differ only in case"
    )
    with pytest.raises(DuplicatePathError) as both:
        check_path_set([path, f"{path}/inner"])
    assert str(both.value) == f"path {path[:200]!r} is both a file and a directory"


@pytest.mark.parametrize(
    "paths",
    [["a/b", "a/b/c"], ["a/b/c/d", "a/b/c"], ["x/Y/z", "x/y/z/w"]],
)
def test_a_file_cannot_also_be_a_directory_at_any_depth(paths: list[str]) -> None:
    with pytest.raises(DuplicatePathError, match="is both a file and a directory"):
        check_path_set(paths)


def test_siblings_and_shared_prefixes_are_not_collisions() -> None:
    check_path_set(["a/b", "a/c", "ab", "a/bc/d"])


def test_only_ascii_trailing_spaces_are_ignored_in_device_names() -> None:
    """Windows drops trailing ASCII spaces before its device-name lookup, not other
    Unicode spaces, so ``NUL\\u2003`` (em space) is an ordinary name."""
    assert is_windows_reserved("NUL  ")
    assert is_windows_reserved("nul .txt")
    assert not is_windows_reserved("NUL\u2003")
    assert not is_windows_reserved("NUL\t")
    assert validate_archive_path("NUL\u2003.txt") == "NUL\u2003.txt"
