"""HKDF-SHA256 (RFC 5869) with unambiguous, length-prefixed ``info`` fields."""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tensorguard.crypto._errors import CryptoError

MAX_HKDF_SHA256_LENGTH = 255 * 32


def encode_info(*fields: bytes) -> bytes:
    """Join ``fields`` as ``u32_be(len) || field`` so no two field lists collide."""
    return b"".join(struct.pack(">I", len(field)) + field for field in fields)


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """Return ``length`` bytes of HKDF-SHA256 output (extract with ``salt``, expand)."""
    if not 0 < length <= MAX_HKDF_SHA256_LENGTH:
        raise CryptoError(
            f"HKDF-SHA256 output length must be 1..{MAX_HKDF_SHA256_LENGTH}, got {length}"
        )
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)
