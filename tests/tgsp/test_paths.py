"""Path attacks are refused when building and when opening."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.durable import TEMP_PREFIX
from tensorguard.tgsp import (
    BuildError,
    CaseCollisionError,
    DuplicatePathError,
    ExtractionError,
    HeaderSchemaError,
    HeaderTooLargeError,
    Limits,
    SpecialFileRejectedError,
    SymlinkRejectedError,
    TrustStore,
    UnsafePathError,
    build_package,
    open_package,
    verify_package,
)
from tensorguard.tgsp._paths import validate_archive_path
from tests.tgsp.conftest import Packager, make_release, make_tree, resign


def build_from(source: Path, packager: Packager, limits: Limits | None = None) -> None:
    output = packager.fresh_path("pkg")
    kwargs: dict[str, Any] = {} if limits is None else {"limits": limits}
    try:
        build_package(
            source,
            output,
            signer=packager.producer,
            recipients=[packager.recipients[0].public_key()],
            release=make_release(),
            **kwargs,
        )
    finally:
        assert not output.exists() or output.stat().st_size > 0
    leftovers = [p for p in output.parent.iterdir() if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == []


# --- build side ------------------------------------------------------------------------


def test_symlinked_file_is_refused_at_build(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "src", {"real.bin": b"x"})
    (source / "link.bin").symlink_to("/etc/passwd")
    with pytest.raises(SymlinkRejectedError):
        build_from(source, packager)


def test_symlinked_directory_is_refused_at_build(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "src", {"real.bin": b"x"})
    (source / "escape").symlink_to(tmp_path)
    with pytest.raises(SymlinkRejectedError):
        build_from(source, packager)


def test_symlinked_source_root_is_refused(tmp_path: Path, packager: Packager) -> None:
    real = make_tree(tmp_path / "real", {"a": b"1"})
    (tmp_path / "alias").symlink_to(real)
    with pytest.raises(SymlinkRejectedError):
        build_from(tmp_path / "alias", packager)


def test_fifo_is_refused_at_build(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "src", {"real.bin": b"x"})
    os.mkfifo(source / "pipe")
    with pytest.raises(SpecialFileRejectedError):
        build_from(source, packager)


def test_socket_is_refused_at_build(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "s", {"real.bin": b"x"})
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(str(source / "sock"))
        with pytest.raises(SpecialFileRejectedError):
            build_from(source, packager)
    finally:
        server.close()


def test_device_is_refused_at_build(packager: Packager) -> None:
    with pytest.raises(SpecialFileRejectedError):
        build_from(Path("/dev/null"), packager)


def test_case_colliding_names_are_refused_at_build(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "src", {"Model.bin": b"1", "model.bin": b"2"})
    if len(list(source.iterdir())) != 2:
        pytest.fail("this test needs a case-sensitive temporary directory")
    with pytest.raises(CaseCollisionError):
        build_from(source, packager)


@pytest.mark.parametrize(
    "name",
    ["back\\slash", "drive:c", "tab\there", "trailing.", "trailing ", "cafe\u0301"],
    ids=["backslash", "colon", "control", "dot", "space", "non-nfc"],
)
def test_unportable_names_are_refused_at_build(
    tmp_path: Path, packager: Packager, name: str
) -> None:
    source = make_tree(tmp_path / "src", {name: b"x"})
    with pytest.raises(UnsafePathError):
        build_from(source, packager)


def test_undecodable_file_name_is_refused_at_build(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "src", {})
    with open(os.path.join(os.fsencode(source), b"bad\xff.bin"), "wb") as handle:
        handle.write(b"x")
    with pytest.raises(UnsafePathError):
        build_from(source, packager)


def test_too_many_files_for_limits_are_refused_at_build(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "src", {f"f{i}": b"" for i in range(5)})
    with pytest.raises(HeaderTooLargeError):
        build_from(source, packager, Limits(max_files=4))
    with pytest.raises(HeaderTooLargeError):
        build_from(source, packager, Limits(max_header_bytes=1500))


def test_existing_output_is_never_overwritten(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "src", {"a": b"1"})
    output = tmp_path / "exists.tgsp"
    output.write_bytes(b"keep me")
    with pytest.raises(BuildError):
        build_package(
            source,
            output,
            signer=packager.producer,
            recipients=[packager.recipients[0].public_key()],
            release=make_release(),
        )
    assert output.read_bytes() == b"keep me"


def test_duplicate_recipients_are_refused(tmp_path: Path, packager: Packager) -> None:
    source = make_tree(tmp_path / "src", {"a": b"1"})
    key = packager.recipients[0].public_key()
    with pytest.raises(BuildError):
        build_package(
            source,
            tmp_path / "dup.tgsp",
            signer=packager.producer,
            recipients=[key, key],
            release=make_release(),
        )
    with pytest.raises(BuildError):
        build_package(
            source,
            tmp_path / "none.tgsp",
            signer=packager.producer,
            recipients=[],
            release=make_release(),
        )


# --- open side (headers forged with a trusted key) -------------------------------------


def _set_paths(*paths: str) -> Callable[[dict[str, Any]], None]:
    def mutate(header: dict[str, Any]) -> None:
        files = header["manifest"]["files"]
        for entry, path in zip(files, paths, strict=True):
            entry["path"] = path

    return mutate


@pytest.fixture
def two_file_package(packager: Packager) -> bytes:
    return packager.build({"a.bin": b"first", "b.bin": b"second"}).path.read_bytes()


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        (("/etc/cron.d/evil", "b.bin"), UnsafePathError),
        (("../evil", "b.bin"), UnsafePathError),
        (("a/../../evil", "b.bin"), UnsafePathError),
        (("./a.bin", "b.bin"), UnsafePathError),
        (("a//b", "b.bin"), UnsafePathError),
        (("a\\..\\evil", "b.bin"), UnsafePathError),
        (("C:evil", "b.bin"), UnsafePathError),
        (("a.bin\x00.txt", "b.bin"), UnsafePathError),
        (("", "b.bin"), UnsafePathError),
        (("a.bin", "a.bin"), DuplicatePathError),
        (("A.bin", "a.bin"), CaseCollisionError),
        (("a", "a/b"), DuplicatePathError),
        (("b.bin", "a.bin"), HeaderSchemaError),
    ],
    ids=[
        "absolute",
        "dotdot",
        "nested-dotdot",
        "dot",
        "empty-component",
        "backslash",
        "drive",
        "nul",
        "empty",
        "duplicate",
        "case-collision",
        "file-and-directory",
        "unsorted",
    ],
)
def test_malicious_paths_are_refused_at_open(
    tmp_path: Path,
    two_file_package: bytes,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    paths: tuple[str, str],
    expected: type[Exception],
) -> None:
    forged = tmp_path / "forged.tgsp"
    forged.write_bytes(resign(two_file_package, _set_paths(*paths), producer))
    destination = tmp_path / "out"
    with pytest.raises(expected):
        open_package(forged, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert not destination.exists()
    assert not (tmp_path / "evil").exists()
    assert [p.name for p in tmp_path.iterdir() if ".tgsp-" in p.name] == []


def test_links_and_devices_cannot_be_expressed(
    tmp_path: Path, two_file_package: bytes, producer: CompositeSigningKey, trust_store: TrustStore
) -> None:
    def make_symlink(header: dict[str, Any]) -> None:
        header["manifest"]["files"][0].update({"type": "symlink", "target": "/etc/passwd"})

    def make_device(header: dict[str, Any]) -> None:
        header["manifest"]["files"][0]["mode"] = 0o20644

    for mutate in (make_symlink, make_device):
        forged = tmp_path / "forged.tgsp"
        forged.write_bytes(resign(two_file_package, mutate, producer))
        with pytest.raises(HeaderSchemaError, match="unknown"):
            verify_package(forged, trust_store)


def test_too_many_files_are_refused_at_open(packager: Packager, trust_store: TrustStore) -> None:
    result = packager.build({f"f{i}": b"" for i in range(6)})
    with pytest.raises(HeaderTooLargeError):
        verify_package(result.path, trust_store, limits=Limits(max_files=5))


def test_existing_destination_is_refused(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    result = packager.build({"a": b"1"})
    destination = tmp_path / "already-here"
    destination.mkdir()
    with pytest.raises(ExtractionError):
        open_package(result.path, destination, recipient_key=recipients[0], trust_store=trust_store)
    link = tmp_path / "link-out"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ExtractionError):
        open_package(result.path, link, recipient_key=recipients[0], trust_store=trust_store)


@pytest.mark.parametrize(
    "path", ["model/adapter.safetensors", "a", "deep/" * 30 + "x", "ünïcödé/ファイル.bin"]
)
def test_reasonable_paths_are_accepted(path: str) -> None:
    assert validate_archive_path(path) == path
