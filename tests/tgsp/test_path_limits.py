"""Archive path limits at their exact boundaries, and invisible format characters.

Written from the mutation run on tensorguard/tgsp/_paths.py (docs/SECURITY.md §4): each
test kills mutants that the other path tests let survive.
"""

from __future__ import annotations

import pytest

from tensorguard.tgsp import UnsafePathError
from tensorguard.tgsp._paths import (
    MAX_COMPONENT_BYTES,
    MAX_DEPTH,
    MAX_PATH_BYTES,
    validate_archive_path,
)


def test_a_path_of_exactly_the_maximum_bytes_is_accepted_one_more_is_not() -> None:
    components = ["a" * 200] * 5  # 5 * 200 + 4 slashes = 1004 bytes
    exact = "/".join(components) + "/" + "b" * (MAX_PATH_BYTES - 1004 - 1)
    assert len(exact.encode()) == MAX_PATH_BYTES
    assert validate_archive_path(exact) == exact
    with pytest.raises(UnsafePathError, match=f"longer than {MAX_PATH_BYTES} bytes"):
        validate_archive_path(exact + "c")


def test_exactly_the_maximum_depth_is_accepted_one_more_is_not() -> None:
    exact = "/".join(["d"] * MAX_DEPTH)
    assert validate_archive_path(exact) == exact
    with pytest.raises(UnsafePathError, match=f"deeper than {MAX_DEPTH} components"):
        validate_archive_path(exact + "/d")


def test_a_component_of_exactly_the_maximum_bytes_is_accepted_one_more_is_not() -> None:
    exact = "x" * MAX_COMPONENT_BYTES
    assert validate_archive_path(f"dir/{exact}") == f"dir/{exact}"
    with pytest.raises(UnsafePathError, match=f"component longer than {MAX_COMPONENT_BYTES}"):
        validate_archive_path(f"dir/{exact}x")


@pytest.mark.parametrize(
    "character",
    [
        "\u200b",  # zero-width space
        "\u202e",  # right-to-left override: "model\u202efdp.exe" shows as "modelexe.pdf"
        "\u2066",  # left-to-right isolate
        "\ufeff",  # byte order mark
    ],
)
def test_invisible_format_characters_are_refused(character: str) -> None:
    with pytest.raises(UnsafePathError):
        validate_archive_path(f"adapter/model{character}.safetensors")
