"""The fixed preamble, byte for byte, and each of its refusals word for word (#18 item 6).

These pin what ``tensorguard/tgsp/_format.py`` decides: the exact bytes it writes, the
bounds it accepts (both ends of the header length), and the type and message of every
refusal, checked on the preamble alone and through ``verify_package`` on a real package.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tensorguard.tgsp import (
    HeaderTooLargeError,
    NotATGSPPackageError,
    PackageFormatError,
    TGSPError,
    TrustStore,
    UnsupportedFormatVersionError,
    verify_package,
)
from tensorguard.tgsp._format import (
    COMPOSITE_SIGNATURE_SIZE,
    MAGIC,
    PREAMBLE_SIZE,
    Limits,
    Preamble,
    payload_offset,
)
from tests.tgsp.conftest import Packager, layout_of

KEY_ID = bytes(range(32))
LIMITS = Limits(max_header_bytes=4096)


def raw_preamble(
    *,
    magic: bytes = MAGIC,
    version: int = 3,
    flags: int = 0,
    key_id: bytes = KEY_ID,
    header_length: int = 100,
) -> bytes:
    """A preamble assembled by hand from the layout in docs/TGSP.md §3."""
    return (
        magic
        + version.to_bytes(2, "big")
        + flags.to_bytes(2, "big")
        + key_id
        + header_length.to_bytes(4, "big")
    )


def refusal(data: bytes, limits: Limits = LIMITS) -> TGSPError:
    with pytest.raises(TGSPError) as caught:
        Preamble.unpack(data, limits)
    return caught.value


def test_pack_writes_the_documented_48_bytes() -> None:
    packed = Preamble(KEY_ID, 0x01020304).pack()
    assert packed == raw_preamble(header_length=0x01020304)
    assert packed == b"\x89TGSP\r\n\x1a\x00\x03\x00\x00" + KEY_ID + b"\x01\x02\x03\x04"
    assert len(packed) == PREAMBLE_SIZE == 48


def test_unpack_returns_the_key_id_and_header_length() -> None:
    unpacked = Preamble.unpack(raw_preamble(header_length=777), LIMITS)
    assert unpacked == Preamble(KEY_ID, 777)
    assert Preamble.unpack(Preamble(KEY_ID, 5).pack(), LIMITS) == Preamble(KEY_ID, 5)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x89TGS", b"\x89TGSP\r\n", b"\x89TGSP\r\n\x1b" + bytes(40), b"PK\x03\x04" + bytes(44)],
)
def test_anything_without_the_magic_is_not_a_package(data: bytes) -> None:
    error = refusal(data)
    assert type(error) is NotATGSPPackageError
    assert str(error) == "not a TGSP package: magic bytes do not match"


@pytest.mark.parametrize("length", [8, 9, 47, 49, 96])
def test_the_magic_with_a_wrong_preamble_size_is_a_format_error(length: int) -> None:
    data = (raw_preamble() + bytes(48))[:length]
    error = refusal(data)
    assert type(error) is PackageFormatError
    assert str(error) == "file ends inside the 48-byte preamble"


@pytest.mark.parametrize("version", [0, 2, 4, 0x0300])
def test_another_format_version_is_refused_naming_both_versions(version: int) -> None:
    error = refusal(raw_preamble(version=version))
    assert type(error) is UnsupportedFormatVersionError
    assert str(error) == (
        f"package format version {version} is not supported; this reader implements "
        "version 3 only; rebuild the package with this TensorGuard release "
        "(tensorguard tgsp build)"
    )


@pytest.mark.parametrize(
    ("flags", "shown"), [(1, "0x0001"), (0x8000, "0x8000"), (0x0A0B, "0x0a0b")]
)
def test_reserved_flags_are_refused_in_hex(flags: int, shown: str) -> None:
    error = refusal(raw_preamble(flags=flags))
    assert type(error) is PackageFormatError
    assert str(error) == f"reserved preamble flags are {shown}, expected 0"


@pytest.mark.parametrize("header_length", [0, 4097, 2**32 - 1])
def test_header_lengths_outside_the_limit_are_refused(header_length: int) -> None:
    error = refusal(raw_preamble(header_length=header_length))
    assert type(error) is HeaderTooLargeError
    assert str(error) == f"header length {header_length} is outside 1..4096 bytes"


@pytest.mark.parametrize("header_length", [1, 2, 4095, 4096])
def test_header_lengths_inside_the_limit_are_accepted(header_length: int) -> None:
    assert Preamble.unpack(raw_preamble(header_length=header_length), LIMITS).header_length == (
        header_length
    )


def test_the_default_limit_is_16_mib() -> None:
    assert Limits().max_header_bytes == 16 * 1024 * 1024
    limit = 16 * 1024 * 1024
    assert Preamble.unpack(raw_preamble(header_length=limit), Limits()).header_length == limit
    error = refusal(raw_preamble(header_length=limit + 1), Limits())
    assert str(error) == f"header length {limit + 1} is outside 1..{limit} bytes"


def test_payload_offset_follows_preamble_header_and_signature() -> None:
    assert COMPOSITE_SIGNATURE_SIZE == 3373
    assert payload_offset(0) == 48 + 2 + 3373
    assert payload_offset(1000) == 48 + 1000 + 2 + 3373
    assert struct.calcsize(">8sHH32sI") == PREAMBLE_SIZE


def test_a_real_package_is_laid_out_as_documented(packager: Packager) -> None:
    package = packager.build({"model.bin": b"weights"}).path.read_bytes()
    layout = layout_of(package)
    assert package[:8] == MAGIC
    assert package[8:12] == b"\x00\x03\x00\x00"
    assert int.from_bytes(package[44:48], "big") == layout.header_length
    assert int.from_bytes(package[48 + layout.header_length :][:2], "big") == 3373
    assert layout.payload_start == payload_offset(layout.header_length)


def _verify_refusal(tmp_path: Path, data: bytes, trust_store: TrustStore) -> TGSPError:
    path = tmp_path / "altered.tgsp"
    path.write_bytes(data)
    with pytest.raises(TGSPError) as caught:
        verify_package(path, trust_store)
    return caught.value


def test_verify_refuses_flags_version_and_magic_before_the_signature(
    tmp_path: Path, packager: Packager, trust_store: TrustStore
) -> None:
    package = packager.build({"model.bin": b"weights"}).path.read_bytes()
    flagged = package[:10] + b"\x00\x01" + package[12:]
    error = _verify_refusal(tmp_path, flagged, trust_store)
    assert (type(error), str(error)) == (
        PackageFormatError,
        "reserved preamble flags are 0x0001, expected 0",
    )
    older = package[:8] + b"\x00\x02" + package[10:]
    error = _verify_refusal(tmp_path, older, trust_store)
    assert type(error) is UnsupportedFormatVersionError
    assert str(error).startswith("package format version 2 is not supported")
    renamed = b"\x89TGSQ" + package[5:]
    error = _verify_refusal(tmp_path, renamed, trust_store)
    assert type(error) is NotATGSPPackageError
