"""Reading the fixed prefix of a package (preamble, header, signature) without keys.

Nothing here establishes trust: :func:`inspect_package` shows what a package *claims*.
Use :func:`tensorguard.tgsp._verifier.verify_package` before acting on any of it.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tensorguard.tgsp._errors import (
    HeaderSchemaError,
    NotATGSPPackageError,
    PackageSignatureError,
    PackageTruncatedError,
    PackageUnreadableError,
)
from tensorguard.tgsp._format import (
    COMPOSITE_SIGNATURE_SIZE,
    DEFAULT_LIMITS,
    MAGIC,
    PREAMBLE_SIZE,
    SIGNATURE_LENGTH,
    Limits,
    Preamble,
    payload_offset,
)
from tensorguard.tgsp._header import PackageHeader, decode_header


@dataclass(frozen=True)
class PackagePrefix:
    """The raw signed region of a package and its signature."""

    preamble: Preamble
    preamble_bytes: bytes
    header_bytes: bytes
    signature: bytes
    file_size: int

    @property
    def signed_bytes(self) -> bytes:
        """The exact bytes the producer signed: preamble followed by header."""
        return self.preamble_bytes + self.header_bytes

    @property
    def key_id(self) -> str:
        """The producer key id named in the preamble (hex)."""
        return self.preamble.key_id.hex()

    @property
    def payload_offset(self) -> int:
        """Where the payload starts in the file."""
        return payload_offset(self.preamble.header_length)


def _read(handle: BinaryIO, size: int, what: str) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise PackageTruncatedError(f"package ends inside its {what}")
    return data


def read_prefix(handle: BinaryIO, limits: Limits = DEFAULT_LIMITS) -> PackagePrefix:
    """Read and structurally check the preamble, header bytes and signature.

    Bounds every allocation by ``limits`` and by the actual file size before reading.
    """
    status = os.fstat(handle.fileno())
    if not stat.S_ISREG(status.st_mode):
        raise PackageUnreadableError(
            "the package is not a regular file (a pipe, FIFO or device): verification reads "
            "the payload twice and needs its size; save it to a file first, or give the "
            "CLI '-' to read standard input (it spools to a private temporary file)"
        )
    file_size = status.st_size
    raw_preamble = handle.read(PREAMBLE_SIZE)
    if len(raw_preamble) < PREAMBLE_SIZE:
        if raw_preamble[: len(MAGIC)] == MAGIC[: len(raw_preamble)] and raw_preamble:
            raise PackageTruncatedError("package ends inside its 48-byte preamble")
        raise NotATGSPPackageError("not a TGSP package: file is shorter than the preamble")
    preamble = Preamble.unpack(raw_preamble, limits)
    if file_size < payload_offset(preamble.header_length):
        raise PackageTruncatedError(
            f"package is {file_size} bytes but its header and signature need "
            f"{payload_offset(preamble.header_length)}"
        )
    header_bytes = _read(handle, preamble.header_length, "header")
    (signature_length,) = SIGNATURE_LENGTH.unpack(_read(handle, SIGNATURE_LENGTH.size, "header"))
    if signature_length != COMPOSITE_SIGNATURE_SIZE:
        raise PackageSignatureError(
            f"signature length field is {signature_length}; the suite's composite "
            f"signature is {COMPOSITE_SIGNATURE_SIZE} bytes"
        )
    signature = _read(handle, signature_length, "signature")
    return PackagePrefix(preamble, raw_preamble, header_bytes, signature, file_size)


def parse_header(prefix: PackagePrefix, limits: Limits = DEFAULT_LIMITS) -> PackageHeader:
    """Decode the header and check it names the same producer as the preamble."""
    header = decode_header(prefix.header_bytes, limits)
    if header.producer_key_id != prefix.key_id:
        raise HeaderSchemaError("producer.key_id differs from the key id in the preamble")
    return header


@dataclass(frozen=True)
class InspectedPackage:
    """What an unverified package claims about itself."""

    header: PackageHeader
    key_id: str
    package_size: int


def inspect_package(path: Path, limits: Limits = DEFAULT_LIMITS) -> InspectedPackage:
    """Return the header of ``path`` **without verifying anything cryptographically**."""
    try:
        with path.open("rb") as handle:
            prefix = read_prefix(handle, limits)
    except OSError as exc:
        raise PackageUnreadableError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return InspectedPackage(parse_header(prefix, limits), prefix.key_id, prefix.file_size)
