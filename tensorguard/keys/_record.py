"""The on-disk key record: a small authenticated header followed by AES-256-GCM ciphertext.

Layout (all integers big-endian)::

    magic   8 bytes   b"TGKEYREC"
    version 1 byte    1
    hlen    4 bytes   length of the header
    header  hlen      RFC 8785 canonical JSON (see RecordHeader)
    body    rest      AES-256-GCM ciphertext || 16-byte tag

Everything before ``body`` is the AEAD's associated data, so the key name, purpose,
provider and sealing parameters are authenticated together with the secret: a record
renamed to another key, relabelled with another purpose or given other parameters fails
to open.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tensorguard.codec import (
    CodecError,
    FrameError,
    FrameReader,
    FrameWriter,
    canonical_json,
    parse_json_object,
)
from tensorguard.keys._errors import InvalidKeyNameError, KeyRecordFormatError
from tensorguard.keys._names import KeyPurpose, validate_key_name

RECORD_MAGIC = b"TGKEYREC"
RECORD_VERSION = 1
RECORD_SUFFIX = ".tgkey"
MAX_HEADER_BYTES = 16 * 1024
NONCE_BYTES = 12
TAG_BYTES = 16

SealValue = str | int
_HEADER_FIELDS = frozenset(
    {"name", "purpose", "provider", "created_at", "nonce", "seal", "attributes"}
)


def b64encode(data: bytes) -> str:
    """Standard base64 text for binary header fields."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Strict base64 decoding of a header field; malformed input is a format error."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyRecordFormatError(
            f"key record field {what!r} is not valid base64; the file is corrupt"
        ) from None


@dataclass(frozen=True)
class RecordHeader:
    """The authenticated, non-secret description of a sealed key.

    ``seal`` holds what the provider needs to recover the record key (salts, a wrapped
    key); ``attributes`` holds public facts bound to the secret (e.g. the Ed25519 public
    key that a PKCS#11 signing record belongs with).
    """

    name: str
    purpose: KeyPurpose
    provider: str
    nonce: bytes
    seal: Mapping[str, SealValue]
    attributes: Mapping[str, str] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0))

    def to_json_bytes(self) -> bytes:
        """RFC 8785 canonical JSON encoding of the header."""
        document = {
            "name": self.name,
            "purpose": self.purpose.value,
            "provider": self.provider,
            "created_at": self.created_at.isoformat(),
            "nonce": b64encode(self.nonce),
            "seal": dict(self.seal),
            "attributes": dict(self.attributes),
        }
        try:
            return canonical_json(document)
        except CodecError as exc:
            raise KeyRecordFormatError(f"key record header cannot be encoded: {exc}") from exc

    def record_prefix(self) -> bytes:
        """Magic, version, length and header: the associated data of the body."""
        header = self.to_json_bytes()
        if len(header) > MAX_HEADER_BYTES:
            raise KeyRecordFormatError(
                f"key record header is {len(header)} bytes, above the {MAX_HEADER_BYTES} limit"
            )
        return FrameWriter(RECORD_MAGIC, RECORD_VERSION).frame(header, length_size=4).to_bytes()


@dataclass(frozen=True)
class ParsedRecord:
    """A record split into its header, its associated data and its ciphertext."""

    header: RecordHeader
    associated_data: bytes
    ciphertext: bytes


def _header_from_json(raw: bytes) -> RecordHeader:
    try:
        document = parse_json_object(raw, what="key record header")
    except CodecError as exc:
        raise KeyRecordFormatError(f"{exc}; the file is corrupt") from None
    if set(document) != _HEADER_FIELDS:
        raise KeyRecordFormatError(
            f"key record header must have exactly the fields {sorted(_HEADER_FIELDS)}"
        )
    seal, attributes = document["seal"], document["attributes"]
    text_fields = ("name", "purpose", "provider", "created_at", "nonce")
    if not (
        all(isinstance(document[key], str) for key in text_fields)
        and isinstance(seal, dict)
        and all(isinstance(k, str) and isinstance(v, str | int) for k, v in seal.items())
        and isinstance(attributes, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in attributes.items())
    ):
        raise KeyRecordFormatError("key record header has fields of the wrong type")
    try:
        purpose = KeyPurpose(document["purpose"])
        created_at = datetime.fromisoformat(document["created_at"])
    except ValueError:
        raise KeyRecordFormatError(
            "key record header has an unknown purpose or a malformed creation time"
        ) from None
    try:
        name = validate_key_name(document["name"])
    except InvalidKeyNameError:
        raise KeyRecordFormatError("key record header holds an invalid key name") from None
    nonce = b64decode(document["nonce"], "nonce")
    if len(nonce) != NONCE_BYTES:
        raise KeyRecordFormatError(f"key record nonce must be {NONCE_BYTES} bytes")
    return RecordHeader(
        name=name,
        purpose=purpose,
        provider=document["provider"],
        nonce=nonce,
        seal=seal,
        attributes=attributes,
        created_at=created_at,
    )


def parse_record(data: bytes) -> ParsedRecord:
    """Split and validate a key record; raise :class:`KeyRecordFormatError` if malformed.

    Parsing authenticates nothing: the caller must open the body with the returned
    associated data before trusting any header field.
    """
    try:
        reader = FrameReader(
            data, magic=RECORD_MAGIC, version=RECORD_VERSION, what="TensorGuard key record"
        )
        raw_header = reader.frame(length_size=4, max_bytes=MAX_HEADER_BYTES, field="header")
    except FrameError as exc:
        raise KeyRecordFormatError(str(exc)) from None
    body_start = reader.offset
    if reader.remaining < TAG_BYTES:
        raise KeyRecordFormatError("key record is truncated (ciphertext missing)")
    header = _header_from_json(raw_header)
    return ParsedRecord(
        header=header, associated_data=data[:body_start], ciphertext=data[body_start:]
    )
