"""Windows device names (CON, NUL, COM1, NUL.txt, ...) are refused by the path rules, at
build and at open, because writing such a file on Windows writes to the device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.tgsp import TrustStore, UnsafePathError, open_package
from tensorguard.tgsp._paths import validate_archive_path
from tests.tgsp.conftest import Packager, resign

RESERVED = [
    "CON", "con", "PRN", "AUX", "NUL", "NUL.txt", "nul.tar.gz", "Nul .txt", "COM1",
    "com9.log", "LPT1", "lpt0", "COM\u00b9", "CONIN$", "conout$.txt", "dir/NUL",
    "AUX/inner.bin",
]  # fmt: skip
NOT_RESERVED = ["CONSOLE", "nul_file", "com10", "LPT", "a.NUL", "my-con.txt", "COMA", "auxv"]


@pytest.mark.parametrize("path", RESERVED)
def test_reserved_device_names_are_refused(path: str) -> None:
    with pytest.raises(UnsafePathError, match="Windows device name"):
        validate_archive_path(path)


@pytest.mark.parametrize("path", NOT_RESERVED)
def test_names_that_only_resemble_devices_are_accepted(path: str) -> None:
    assert validate_archive_path(path) == path


def test_a_device_name_is_refused_at_build(packager: Packager) -> None:
    with pytest.raises(UnsafePathError, match="Windows device name"):
        packager.build({"weights/NUL.txt": b"x", "a.bin": b"y"})


@pytest.mark.parametrize("name", ["CON", "NUL.txt", "COM1"])
def test_a_device_name_is_refused_at_open(
    tmp_path: Path,
    packager: Packager,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    name: str,
) -> None:
    package = packager.build({"a.bin": b"first"}).path.read_bytes()

    def rename(header: dict[str, Any]) -> None:
        header["manifest"]["files"][0]["path"] = name

    forged = tmp_path / "forged.tgsp"
    forged.write_bytes(resign(package, rename, producer))
    destination = tmp_path / "out"
    with pytest.raises(UnsafePathError):
        open_package(forged, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert not destination.exists()
