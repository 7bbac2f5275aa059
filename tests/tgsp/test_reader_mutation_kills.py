"""Reading a package's signed prefix without keys, refusal by refusal (#18 item 6).

``tensorguard/tgsp/_reader.py`` reads the preamble, header bytes and signature of a real
package (cut short or altered where a test says so) and must refuse a pipe, a file too
short for what its preamble claims and a wrong signature length, each with its own type
and message, and tell a truncated package from a file that is not a package at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import CompositeSigningKey
from tensorguard.tgsp import (
    HeaderSchemaError,
    HeaderTooLargeError,
    NotATGSPPackageError,
    PackageSignatureError,
    PackageTruncatedError,
    PackageUnreadableError,
    TGSPError,
    TrustStore,
    inspect_package,
    verify_package,
)
from tensorguard.tgsp._format import MAGIC, Limits, payload_offset
from tensorguard.tgsp._reader import parse_header, read_prefix
from tests.tgsp.conftest import Packager, layout_of, resign


@pytest.fixture
def package(packager: Packager) -> bytes:
    return packager.build({"model.bin": b"weights" * 100, "cfg.json": b"{}"}).path.read_bytes()


def read_bytes_prefix(tmp_path: Path, data: bytes, limits: Limits | None = None) -> Any:
    path = tmp_path / "candidate.tgsp"
    path.write_bytes(data)
    with path.open("rb") as handle:
        return read_prefix(handle) if limits is None else read_prefix(handle, limits)


def refusal(tmp_path: Path, data: bytes) -> TGSPError:
    with pytest.raises(TGSPError) as caught:
        read_bytes_prefix(tmp_path, data)
    return caught.value


def test_the_prefix_is_the_signed_region_and_its_signature(tmp_path: Path, package: bytes) -> None:
    layout = layout_of(package)
    prefix = read_bytes_prefix(tmp_path, package)
    assert prefix.preamble_bytes == package[:48]
    assert prefix.header_bytes == package[48 : 48 + layout.header_length]
    assert prefix.signed_bytes == package[: 48 + layout.header_length]
    assert prefix.signature == package[layout.signature_start : layout.payload_start]
    assert len(prefix.signature) == 3373
    assert prefix.key_id == package[12:44].hex()
    assert prefix.file_size == len(package)
    assert prefix.payload_offset == layout.payload_start == payload_offset(layout.header_length)
    assert prefix.preamble.header_length == layout.header_length


def test_a_pipe_is_refused_with_the_way_out() -> None:
    reader, writer = os.pipe()
    os.write(writer, b"\x89TGSP")
    os.close(writer)
    with os.fdopen(reader, "rb") as handle, pytest.raises(PackageUnreadableError) as caught:
        read_prefix(handle)
    assert str(caught.value) == (
        "the package is not a regular file (a pipe, FIFO or device): verification reads "
        "the payload twice and needs its size; save it to a file first, or give the "
        "CLI '-' to read standard input (it spools to a private temporary file)"
    )


@pytest.mark.parametrize(
    "data", [b"", b"X", b"\x88", b"TGSP", b"\x89TGSQ", b"\x89TGSP\r\n\x1b" + bytes(30)]
)
def test_a_short_file_without_the_magic_is_not_a_package(tmp_path: Path, data: bytes) -> None:
    error = refusal(tmp_path, data)
    assert type(error) is NotATGSPPackageError
    assert str(error) == "not a TGSP package: file is shorter than the preamble"


@pytest.mark.parametrize("length", [1, 2, 7, 8, 9, 30, 47])
def test_a_short_file_that_starts_like_a_package_is_truncated(
    tmp_path: Path, package: bytes, length: int
) -> None:
    error = refusal(tmp_path, package[:length])
    assert type(error) is PackageTruncatedError
    assert str(error) == "package ends inside its 48-byte preamble"


def test_a_long_file_without_the_magic_is_refused_by_the_preamble(tmp_path: Path) -> None:
    error = refusal(tmp_path, b"PK\x03\x04" + bytes(100))
    assert type(error) is NotATGSPPackageError
    assert str(error) == "not a TGSP package: magic bytes do not match"
    assert MAGIC == b"\x89TGSP\r\n\x1a"


def test_a_file_too_short_for_its_header_and_signature_is_refused_before_reading(
    tmp_path: Path, package: bytes
) -> None:
    layout = layout_of(package)
    for cut in (48, 49, layout.signature_start, layout.payload_start - 1):
        error = refusal(tmp_path, package[:cut])
        assert type(error) is PackageTruncatedError
        assert str(error) == (
            f"package is {cut} bytes but its header and signature need {layout.payload_start}"
        )
    # the whole prefix without any payload is read; the verifier refuses the length later
    prefix = read_bytes_prefix(tmp_path, package[: layout.payload_start])
    assert prefix.file_size == layout.payload_start


@pytest.mark.parametrize("length", [0, 3372, 3374, 0xFFFF])
def test_a_wrong_signature_length_is_refused(tmp_path: Path, package: bytes, length: int) -> None:
    at = layout_of(package).signature_start - 2
    altered = package[:at] + length.to_bytes(2, "big") + package[at + 2 :]
    error = refusal(tmp_path, altered)
    assert type(error) is PackageSignatureError
    assert str(error) == (
        f"signature length field is {length}; the suite's composite signature is 3373 bytes"
    )


def test_the_header_must_name_the_preambles_producer(
    tmp_path: Path,
    package: bytes,
    producer: CompositeSigningKey,
    stranger: CompositeSigningKey,
    trust_store: TrustStore,
) -> None:
    other = stranger.public_key().fingerprint()

    def rename(header: dict[str, Any]) -> None:
        header["producer"]["key_id"] = other

    altered = resign(package, rename, producer)
    prefix = read_bytes_prefix(tmp_path, altered)
    with pytest.raises(HeaderSchemaError) as caught:
        parse_header(prefix)
    assert str(caught.value) == "producer.key_id differs from the key id in the preamble"
    path = tmp_path / "renamed.tgsp"
    path.write_bytes(altered)
    with pytest.raises(HeaderSchemaError, match=r"^producer\.key_id differs from the key id"):
        verify_package(path, trust_store)
    unchanged = parse_header(read_bytes_prefix(tmp_path, package))
    assert unchanged.producer_key_id == producer.public_key().fingerprint()


def test_the_callers_limits_bound_the_header(tmp_path: Path, package: bytes) -> None:
    header_length = layout_of(package).header_length
    read_bytes_prefix(tmp_path, package, Limits(max_header_bytes=header_length))
    with pytest.raises(HeaderTooLargeError):
        read_bytes_prefix(tmp_path, package, Limits(max_header_bytes=header_length - 1))
    prefix = read_bytes_prefix(tmp_path, package)
    assert len(parse_header(prefix, Limits(max_files=2)).files) == 2
    with pytest.raises(HeaderTooLargeError):
        parse_header(prefix, Limits(max_files=1))


def test_inspect_reports_the_claims_without_keys(tmp_path: Path, package: bytes) -> None:
    path = tmp_path / "inspected.tgsp"
    path.write_bytes(package)
    inspected = inspect_package(path)
    assert inspected.key_id == package[12:44].hex()
    assert inspected.package_size == len(package)
    assert [entry.path for entry in inspected.header.files] == ["cfg.json", "model.bin"]
    with pytest.raises(HeaderTooLargeError):
        inspect_package(path, Limits(max_files=1))
    with pytest.raises(HeaderTooLargeError) as caught:
        inspect_package(path, Limits(max_header_bytes=100))
    header_length = layout_of(package).header_length
    assert str(caught.value) == f"header length {header_length} is outside 1..100 bytes"


def test_inspect_names_an_unreadable_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.tgsp"
    with pytest.raises(PackageUnreadableError) as caught:
        inspect_package(missing)
    assert str(caught.value) == f"cannot read {missing}: No such file or directory"


def test_a_package_inside_a_larger_file_is_read_only_as_far_as_it_goes(
    tmp_path: Path, package: bytes
) -> None:
    """Read from its position (here after 10 000 other bytes), a cut package is truncated.

    The file is large enough for what the preamble claims, so only the reads themselves
    can notice that the package ends early.
    """
    layout = layout_of(package)
    cuts = {
        layout.header_start + layout.header_length - 10: "header",
        layout.signature_start - 1: "header",  # inside the signature length field
        layout.signature_start + 100: "signature",
    }
    for cut, what in cuts.items():
        path = tmp_path / f"embedded-{cut}.bin"
        path.write_bytes(bytes(10_000) + package[:cut])
        with path.open("rb") as handle:
            handle.seek(10_000)
            with pytest.raises(PackageTruncatedError) as caught:
                read_prefix(handle)
        assert str(caught.value) == f"package ends inside its {what}"
    path = tmp_path / "embedded-whole.bin"
    path.write_bytes(bytes(10_000) + package)
    with path.open("rb") as handle:
        handle.seek(10_000)
        assert (
            read_prefix(handle).signature == package[layout.signature_start : layout.payload_start]
        )
