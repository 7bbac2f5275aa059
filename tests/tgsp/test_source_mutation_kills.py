"""Listing and opening a package's source files, refusal by refusal (#18 item 6).

``tensorguard/tgsp/_source.py`` walks a real directory tree without following links,
refuses links, FIFOs and sockets naming them, bounds the file count, and reopens each
listed file only if it is still the same regular file of the same size.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

import pytest

from tensorguard.tgsp import (
    BuildError,
    CaseCollisionError,
    HeaderTooLargeError,
    SourceChangedError,
    SpecialFileRejectedError,
    SymlinkRejectedError,
    UnsafePathError,
)
from tensorguard.tgsp._format import DEFAULT_LIMITS, Limits
from tensorguard.tgsp._source import SourceFile, collect_source_files, open_source_file
from tests.tgsp.conftest import make_tree


def listing(found: list[SourceFile]) -> list[tuple[str, int]]:
    return [(item.archive_path, item.size) for item in found]


def test_a_tree_is_listed_recursively_and_sorted_by_archive_path(tmp_path: Path) -> None:
    root = make_tree(
        tmp_path / "src",
        {"b.bin": b"bb", "a/z.txt": b"z", "a/b/c.txt": b"ccc", "a-b.txt": b"", "A0": b"0"},
    )
    found = collect_source_files(root, DEFAULT_LIMITS)
    assert listing(found) == [
        ("A0", 1),
        ("a-b.txt", 0),
        ("a/b/c.txt", 3),
        ("a/z.txt", 1),
        ("b.bin", 2),
    ]
    for item in found:
        info = os.stat(item.location)
        assert item.location == root / item.archive_path
        assert (item.device, item.inode, item.size) == (info.st_dev, info.st_ino, info.st_size)


def test_a_single_file_source_is_listed_under_its_own_name(tmp_path: Path) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    (found,) = collect_source_files(source, DEFAULT_LIMITS)
    info = os.stat(source)
    assert found == SourceFile("model.bin", source, 7, info.st_dev, info.st_ino)


def test_a_missing_source_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nothing"
    with pytest.raises(BuildError) as caught:
        collect_source_files(missing, DEFAULT_LIMITS)
    assert type(caught.value) is BuildError
    assert str(caught.value) == f"cannot read package source {missing}: No such file or directory"


def test_symbolic_links_are_refused_by_name(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"real.bin": b"x", "sub/inner.bin": b"y"})
    link = root / "sub" / "link.bin"
    link.symlink_to(root / "real.bin")
    with pytest.raises(SymlinkRejectedError) as caught:
        collect_source_files(root, DEFAULT_LIMITS)
    assert str(caught.value) == f"refusing symbolic link {link}; package its target instead"
    directory_link = tmp_path / "linked-src"
    directory_link.symlink_to(root, target_is_directory=True)
    with pytest.raises(SymlinkRejectedError) as caught:
        collect_source_files(directory_link, DEFAULT_LIMITS)
    assert str(caught.value) == (
        f"refusing symbolic link {directory_link}; package its target instead"
    )


def test_fifos_and_sockets_are_refused_by_name(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"real.bin": b"x"})
    fifo = root / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(SpecialFileRejectedError) as caught:
        collect_source_files(root, DEFAULT_LIMITS)
    assert str(caught.value) == f"refusing {fifo}: not a regular file (device, FIFO or socket)"
    with pytest.raises(SpecialFileRejectedError):
        collect_source_files(fifo, DEFAULT_LIMITS)
    fifo.unlink()
    socket_path = root / "s"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(socket_path))
        with pytest.raises(SpecialFileRejectedError) as caught:
            collect_source_files(root, DEFAULT_LIMITS)
    assert str(caught.value) == (
        f"refusing {socket_path}: not a regular file (device, FIFO or socket)"
    )


def test_the_file_limit_is_inclusive_and_names_the_directory(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"a": b"1", "d/b": b"2", "d/c": b"3"})
    assert len(collect_source_files(root, Limits(max_files=3))) == 3
    with pytest.raises(HeaderTooLargeError) as caught:
        collect_source_files(root, Limits(max_files=2))
    assert str(caught.value) == f"{root / 'd'} holds more than 2 files, the package limit"


def test_every_archive_path_follows_the_path_rules(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"ok.bin": b"1", "sub/bad\\name": b"2"})
    with pytest.raises(UnsafePathError, match="backslash separator"):
        collect_source_files(root, DEFAULT_LIMITS)
    root = make_tree(tmp_path / "src2", {"dir/NUL.txt": b"1"})
    with pytest.raises(UnsafePathError, match=r"'dir/NUL.txt'.*Windows device name"):
        collect_source_files(root, DEFAULT_LIMITS)
    single = tmp_path / "CON"
    single.write_bytes(b"1")
    with pytest.raises(UnsafePathError, match="Windows device name"):
        collect_source_files(single, DEFAULT_LIMITS)


def test_the_listed_set_is_checked_for_case_collisions(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"Model.bin": b"1", "model.bin": b"2"})
    with pytest.raises(CaseCollisionError):
        collect_source_files(root, DEFAULT_LIMITS)


def test_a_listed_file_opens_unbuffered_and_not_inherited(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"f.bin": b"content"})
    (item,) = collect_source_files(root, DEFAULT_LIMITS)
    with open_source_file(item) as handle:
        assert handle.read() == b"content"
        assert fcntl.fcntl(handle.fileno(), fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    assert handle.closed


def test_a_file_replaced_or_resized_after_listing_is_refused(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"f.bin": b"content", "g.bin": b"content"})
    first, second = collect_source_files(root, DEFAULT_LIMITS)
    first.location.write_bytes(b"content!")
    with pytest.raises(SourceChangedError) as caught, open_source_file(first):
        pass
    assert str(caught.value) == (
        f"{first.location} was replaced or resized during packaging; rebuild the package"
    )
    replacement = root / "new.bin"
    replacement.write_bytes(b"CONTENT")  # same size, another inode
    os.replace(replacement, second.location)
    with (
        pytest.raises(SourceChangedError, match="was replaced or resized"),
        open_source_file(second),
    ):
        pass
    moved = SourceFile(
        "g.bin", second.location, 7, second.device + 1, os.stat(second.location).st_ino
    )
    with (
        pytest.raises(SourceChangedError, match="was replaced or resized"),
        open_source_file(moved),
    ):
        pass


def test_a_file_removed_or_turned_into_a_link_cannot_be_opened(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "src", {"f.bin": b"content", "g.bin": b"other"})
    first, second = collect_source_files(root, DEFAULT_LIMITS)
    first.location.unlink()
    with pytest.raises(SourceChangedError) as caught, open_source_file(first):
        pass
    assert str(caught.value) == (
        f"cannot open {first.location} (No such file or directory); it changed during packaging"
    )
    second.location.unlink()
    second.location.symlink_to(first.location.parent / "elsewhere")
    (first.location.parent / "elsewhere").write_bytes(b"other")
    with pytest.raises(SourceChangedError) as caught, open_source_file(second):
        pass
    assert str(caught.value) == (
        f"cannot open {second.location} (Too many levels of symbolic links); "
        "it changed during packaging"
    )
