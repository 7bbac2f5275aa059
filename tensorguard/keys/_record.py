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

The header's schema is the strict pydantic model :class:`_HeaderDocument`: a missing,
unknown or mistyped field is refused by name when a record is parsed and before one is
written.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, TypeVar

from pydantic import BeforeValidator, Field

from tensorguard.codec import (
    CodecError,
    FrameError,
    FrameReader,
    FrameWriter,
    IsoTimestamp,
    StrictModel,
    canonical_json,
    parse_json_object,
    validate_model,
)
from tensorguard.keys._errors import KeyRecordFormatError
from tensorguard.keys._names import KEY_NAME_PATTERN, KeyPurpose

RECORD_MAGIC = b"TGKEYREC"
RECORD_VERSION = 1
RECORD_SUFFIX = ".tgkey"
MAX_HEADER_BYTES = 16 * 1024
NONCE_BYTES = 12
TAG_BYTES = 16
_WHAT = "key record header"

SealValue = str | int


def b64encode(data: bytes) -> str:
    """Standard base64 text for binary header fields."""
    return base64.b64encode(data).decode("ascii")


def _strict_b64decode(text: str) -> bytes:
    """Base64 with no stray characters; raises :class:`ValueError`."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("is not valid base64") from None


def b64decode(text: str, what: str) -> bytes:
    """Strict base64 decoding of a header field; malformed input is a format error."""
    try:
        return _strict_b64decode(text)
    except ValueError:
        raise KeyRecordFormatError(
            f"key record field {what!r} is not valid base64; the file is corrupt"
        ) from None


def _purpose_from_json(value: object) -> KeyPurpose:
    if not isinstance(value, str):
        raise ValueError("must be a key purpose string")
    try:
        return KeyPurpose(value)
    except ValueError:
        known = ", ".join(purpose.value for purpose in KeyPurpose)
        raise ValueError(f"is not a known key purpose ({known})") from None


def _bytes_from_base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise ValueError("must be base64 text")
    return _strict_b64decode(value)


Base64Bytes = Annotated[bytes, BeforeValidator(_bytes_from_base64)]
"""Binary data written as standard base64 text (:func:`b64encode`) in a record's JSON."""


def _nonce_from_json(value: object) -> bytes:
    nonce = _bytes_from_base64(value)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"must be {NONCE_BYTES} bytes, not {len(nonce)}")
    return nonce


class _HeaderDocument(StrictModel):
    """The record header exactly as it is on disk (RFC 8785 canonical JSON).

    ``seal`` is checked field by field by the provider that wrote it; here only its
    shape (text or integer values, never booleans) is fixed.
    """

    name: Annotated[str, Field(pattern=f"^{KEY_NAME_PATTERN.pattern}$")]
    purpose: Annotated[KeyPurpose, BeforeValidator(_purpose_from_json)]
    provider: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
    created_at: IsoTimestamp
    nonce: Annotated[bytes, BeforeValidator(_nonce_from_json)]
    seal: dict[str, str | int]
    attributes: dict[str, str]


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
            validate_model(_HeaderDocument, document, what=_WHAT)
            return canonical_json(document)
        except CodecError as exc:
            raise KeyRecordFormatError(f"key record header cannot be encoded: {exc}") from None

    def record_prefix(self) -> bytes:
        """Magic, version, length and header: the associated data of the body."""
        header = self.to_json_bytes()
        if len(header) > MAX_HEADER_BYTES:
            raise KeyRecordFormatError(
                f"key record header is {len(header)} bytes, above the {MAX_HEADER_BYTES} limit"
            )
        return FrameWriter(RECORD_MAGIC, RECORD_VERSION).frame(header, length_size=4).to_bytes()


SealT = TypeVar("SealT", bound=StrictModel)


def parse_seal(model: type[SealT], header: RecordHeader, provider: str) -> SealT:
    """Validate a record's ``seal`` against the sealing provider's own schema.

    The seal is read before the record is authenticated (it says how to recover the
    record key), so it is checked field by field; raises :class:`KeyRecordFormatError`
    naming the key and the bad fields (never their values).
    """
    what = f"key record {header.name!r} sealing parameters for the {provider} provider"
    try:
        return validate_model(model, dict(header.seal), what=what)
    except CodecError as exc:
        raise KeyRecordFormatError(
            f"{exc}; the file is corrupt or was sealed by another provider"
        ) from None


@dataclass(frozen=True)
class ParsedRecord:
    """A record split into its header, its associated data and its ciphertext."""

    header: RecordHeader
    associated_data: bytes
    ciphertext: bytes


def _header_from_json(raw: bytes) -> RecordHeader:
    try:
        parsed = validate_model(_HeaderDocument, parse_json_object(raw, what=_WHAT), what=_WHAT)
    except CodecError as exc:
        raise KeyRecordFormatError(f"{exc}; the file is corrupt") from None
    return RecordHeader(
        name=parsed.name,
        purpose=parsed.purpose,
        provider=parsed.provider,
        nonce=parsed.nonce,
        seal=parsed.seal,
        attributes=parsed.attributes,
        created_at=parsed.created_at,
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
