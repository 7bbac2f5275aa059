"""TGSP v3 byte layout: constants, the fixed preamble, limits and the cipher suite.

::

    offset      size  field
    0           8     magic  89 54 47 53 50 0D 0A 1A  ("\\x89TGSP\\r\\n\\x1a")
    8           2     format version, u16 big-endian = 3
    10          2     flags, u16 big-endian = 0 (reserved; anything else is refused)
    12          32    producer key id: SHA-256 of the composite public key
    44          4     header length H, u32 big-endian, 1 <= H <= max_header_bytes
    48          H     header: RFC 8785 canonical JSON (see header.py, codec.py)
    48+H        2     signature length S, u16 big-endian = 3373
    50+H        S     composite ML-DSA-65 + Ed25519 signature over bytes [0, 48+H)
                      with context "tensorguard/tgsp/v3/header"
    50+H+S      P     payload: chunked AES-256-GCM stream, P = header.payload.length
    50+H+S+P          end of file (trailing bytes are refused)

Version 3 replaced version 2's single payload SHA-256 with one SHA-256 per *segment*
of ``payload.segment_chunks`` sealed chunks, all listed in the signed header, so a
verifier hashes segments on several cores. Older versions are refused.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tensorguard.crypto import COMPOSITE_ALGORITHM, SIGNATURE_SIZE
from tensorguard.tgsp._errors import (
    HeaderTooLargeError,
    NotATGSPPackageError,
    PackageFormatError,
    UnsupportedFormatVersionError,
)

MAGIC = b"\x89TGSP\r\n\x1a"
FORMAT_VERSION = 3
PREAMBLE = struct.Struct(">8sHH32sI")
PREAMBLE_SIZE = PREAMBLE.size
SIGNATURE_LENGTH = struct.Struct(">H")
SIGNATURE_CONTEXT = b"tensorguard/tgsp/v3/header"
SIGNATURE_ALGORITHM = COMPOSITE_ALGORITHM
KEM_ALGORITHM = "X-Wing"
AEAD_ALGORITHM = "AES-256-GCM-STREAM"
SUITE = "TGSP3-COMPSIG-MLDSA65-Ed25519-SHA512-XWING-HKDF-SHA256-AES256GCM-SHA256"
PAYLOAD_KEY_LABEL = b"TGSP-v3 payload key"
DEFAULT_CHUNK_SIZE = 1024 * 1024
MIN_CHUNK_SIZE = 1024
MAX_CHUNK_SIZE = 16 * 1024 * 1024
COMPOSITE_SIGNATURE_SIZE = SIGNATURE_SIZE
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024
"""Plaintext bytes per payload segment the builder aims for (a whole number of chunks)."""
MAX_SEGMENT_CHUNKS = 1 << 20
"""Largest ``payload.segment_chunks`` a reader accepts."""


@dataclass(frozen=True)
class Limits:
    """Resource limits applied before any allocation driven by package contents."""

    max_header_bytes: int = 16 * 1024 * 1024
    max_files: int = 100_000
    max_recipients: int = 256
    max_annotations: int = 64
    max_segments: int = 65_536


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Preamble:
    """The fixed 48-byte start of every package."""

    key_id: bytes
    header_length: int

    def pack(self) -> bytes:
        """Encode the preamble (format version 3, flags 0)."""
        return PREAMBLE.pack(MAGIC, FORMAT_VERSION, 0, self.key_id, self.header_length)

    @classmethod
    def unpack(cls, data: bytes, limits: Limits) -> Preamble:
        """Decode and check magic, version, flags and the header length limit."""
        if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
            raise NotATGSPPackageError("not a TGSP package: magic bytes do not match")
        if len(data) != PREAMBLE_SIZE:
            raise PackageFormatError("file ends inside the 48-byte preamble")
        _, version, flags, key_id, header_length = PREAMBLE.unpack(data)
        if version != FORMAT_VERSION:
            raise UnsupportedFormatVersionError(
                f"package format version {version} is not supported; this reader "
                f"implements version {FORMAT_VERSION} only; rebuild the package with this "
                "TensorGuard release (tensorguard tgsp build)"
            )
        if flags != 0:
            raise PackageFormatError(f"reserved preamble flags are {flags:#06x}, expected 0")
        if header_length == 0 or header_length > limits.max_header_bytes:
            raise HeaderTooLargeError(
                f"header length {header_length} is outside 1..{limits.max_header_bytes} bytes"
            )
        return cls(key_id, header_length)


def payload_offset(header_length: int) -> int:
    """Return the file offset where the payload begins."""
    return PREAMBLE_SIZE + header_length + SIGNATURE_LENGTH.size + COMPOSITE_SIGNATURE_SIZE
