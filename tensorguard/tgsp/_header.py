"""The signed TGSP v3 header: wire schema, in-memory values and canonical encoding.

The header's JSON shape is defined once, by strict pydantic models. A parsed header is
validated against them; a header being built is encoded and validated against the same
models before it is signed, so a builder cannot emit a header that a reader would
refuse and a reader refuses anything a builder could not have produced. The frozen
dataclasses here are the values the rest of TGSP works with. See ``docs/TGSP.md`` for
the field reference.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import ErrorDetails

from tensorguard._codec_schema import StrictModel
from tensorguard.codec import MAX_SAFE_INTEGER, CodecError, canonical_json, parse_canonical_json
from tensorguard.crypto import CIPHERTEXT_SIZE as XWING_CIPHERTEXT_SIZE
from tensorguard.crypto import (
    TAG_SIZE,
    WRAPPED_KEY_SIZE,
    WrappedKey,
    chunk_count,
    ciphertext_length,
)
from tensorguard.tgsp._errors import HeaderEncodingError, HeaderSchemaError, HeaderTooLargeError
from tensorguard.tgsp._format import (
    AEAD_ALGORITHM,
    FORMAT_VERSION,
    KEM_ALGORITHM,
    MAX_CHUNK_SIZE,
    MAX_SEGMENT_CHUNKS,
    MIN_CHUNK_SIZE,
    SIGNATURE_ALGORITHM,
    SUITE,
    Limits,
)
from tensorguard.tgsp._paths import check_path_set, validate_archive_path

MAX_TEXT_LENGTH = 256


def _check_header_value(value: object, depth: int = 0) -> None:
    """Keep a header inside TGSP's JSON subset: objects with ASCII keys, arrays,
    strings and integers in 0..2**53-1 (no floats, booleans or null), at most 32 deep."""
    if depth > 32:
        raise HeaderEncodingError("header nests deeper than 32 levels")
    if isinstance(value, bool) or value is None or isinstance(value, float):
        raise HeaderEncodingError(
            f"header contains a {type(value).__name__}; only objects, arrays, strings "
            "and non-negative integers are allowed"
        )
    if isinstance(value, int):
        if not 0 <= value <= MAX_SAFE_INTEGER:
            raise HeaderEncodingError(f"integer {value} outside 0..2**53-1")
    elif isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise HeaderEncodingError("string is not valid Unicode (lone surrogate)") from exc
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key.isascii():
                raise HeaderEncodingError(f"object key {key!r} is not an ASCII string")
            _check_header_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_header_value(item, depth + 1)
    else:
        raise HeaderEncodingError(f"cannot encode {type(value).__name__} in a header")


def encode_header_json(value: object) -> bytes:
    """RFC 8785 canonical bytes of a header-shaped value (TGSP's JSON subset only)."""
    _check_header_value(value)
    try:
        return canonical_json(value)
    except CodecError as exc:
        raise HeaderEncodingError(str(exc)) from exc


def decode_header_json(data: bytes) -> Any:
    """Decode header bytes, refusing anything but the canonical form of a subset value.

    Duplicate keys, floats, ``NaN``/``Infinity``, booleans, ``null``, invalid UTF-8 and
    any byte string that does not re-encode to itself are refused, so exactly one byte
    string represents each header and the signature covers its meaning.
    """
    try:
        value = parse_canonical_json(data, what="TGSP header", allow_floats=False)
    except CodecError as exc:
        raise HeaderEncodingError(str(exc)) from exc
    _check_header_value(value)
    return value


def _schema(where: str, problem: str) -> HeaderSchemaError:
    return HeaderSchemaError(f"header field {where}: {problem}")


# --- The wire schema -----------------------------------------------------------------
# The pydantic models below are the one definition of the header's JSON shape. A parsed
# header is validated against them; a header being built is encoded and validated
# against the same models, so a builder cannot emit what a reader would refuse.


def _printable(value: str) -> str:
    if any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in value):
        raise ValueError("contains control or format characters")
    return value


# The fixed-value and base64 rules are module-level functions bound with ``partial`` in
# the annotations below (not closures built by a factory at import), so the rule itself
# runs at validation time.
def _check_equal(value: object, *, expected: object) -> object:
    if value != expected:
        raise ValueError(f"must be {expected!r}")
    return value


def _check_canonical_base64(value: str, *, size: int) -> str:
    try:
        decoded = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ValueError("is not valid base64") from None
    if len(decoded) != size or base64.b64encode(decoded).decode("ascii") != value:
        raise ValueError(f"must be the canonical base64 of exactly {size} bytes")
    return value


_Text = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_TEXT_LENGTH),
    AfterValidator(_printable),
]
_Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_Hex32 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{32}$")]
_Channel = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
_AnnotationKey = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._/-]{0,63}$")]
_Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INTEGER)]
_ArchivePath = Annotated[str, AfterValidator(validate_archive_path)]


class _ModelDocument(StrictModel):
    name: _Text
    sha256: _Hex64


class _ReleaseDocument(StrictModel):
    channel: _Channel
    version: _Count
    created_at: _Count
    expires_at: _Count
    model: _ModelDocument
    annotations: dict[_AnnotationKey, _Text]
    base_model: _ModelDocument | None = None
    round: _Text | None = None
    gate_decision_sha256: _Hex64 | None = None

    @model_validator(mode="after")
    def _expires_after_creation(self) -> _ReleaseDocument:
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be later than created_at")
        return self


class _FileDocument(StrictModel):
    path: _ArchivePath
    size: _Count
    sha256: _Hex64


class _ManifestDocument(StrictModel):
    file_count: _Count
    total_size: _Count
    files: list[_FileDocument]


class _ProducerDocument(StrictModel):
    key_id: _Hex64
    algorithm: Annotated[str, AfterValidator(partial(_check_equal, expected=SIGNATURE_ALGORITHM))]


class _RecipientDocument(StrictModel):
    recipient_id: _Hex64
    kem: Annotated[str, AfterValidator(partial(_check_equal, expected=KEM_ALGORITHM))]
    kem_ciphertext: Annotated[
        str, AfterValidator(partial(_check_canonical_base64, size=XWING_CIPHERTEXT_SIZE))
    ]
    wrapped_key: Annotated[
        str, AfterValidator(partial(_check_canonical_base64, size=WRAPPED_KEY_SIZE))
    ]


class _PayloadDocument(StrictModel):
    aead: Annotated[str, AfterValidator(partial(_check_equal, expected=AEAD_ALGORITHM))]
    chunk_size: Annotated[int, Field(ge=MIN_CHUNK_SIZE, le=MAX_CHUNK_SIZE)]
    chunk_count: Annotated[int, Field(ge=1, le=MAX_SAFE_INTEGER)]
    length: _Count
    segment_chunks: Annotated[int, Field(ge=1, le=MAX_SEGMENT_CHUNKS)]
    segment_sha256: list[_Hex64]


class _HeaderDocument(StrictModel):
    format: Annotated[str, AfterValidator(partial(_check_equal, expected="TGSP"))]
    format_version: Annotated[int, AfterValidator(partial(_check_equal, expected=FORMAT_VERSION))]
    suite: Annotated[str, AfterValidator(partial(_check_equal, expected=SUITE))]
    package_id: _Hex32
    producer: _ProducerDocument
    release: _ReleaseDocument
    manifest: _ManifestDocument
    recipients: list[_RecipientDocument]
    payload: _PayloadDocument


_DocumentT = TypeVar("_DocumentT", bound=StrictModel)


def _field_path(prefix: str, location: tuple[int | str, ...]) -> str:
    path = prefix
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":  # pydantic's marker for a bad key of a mapping
            path += " (key)"
        else:
            path = f"{path}.{part}" if path else part
    return path or "header"


_JSON_PROBLEMS = {
    "missing": "is missing",
    "extra_forbidden": "unknown field",
    "model_type": "must be an object",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "int_type": "must be an integer",
    "string_type": "must be a string",
}


def _problem(error: ErrorDetails) -> str:
    """The problem in JSON's words (objects, arrays) where pydantic speaks Python's."""
    if error["type"] == "value_error":
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return _JSON_PROBLEMS.get(error["type"], error["msg"])


def _validate(model: type[_DocumentT], document: object, prefix: str) -> _DocumentT:
    """Validate ``document`` against ``model``; a failure names every bad field (at most
    five) by its header path, never the offending value."""
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        problems = "; ".join(
            f"header field {_field_path(prefix, error['loc'])}: {_problem(error)}"
            for error in errors[:5]
        )
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        raise HeaderSchemaError(problems + more) from None


def _member(document: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(document, dict):
            return None
        document = document.get(key)
    return document


def _check_counts(document: object, limits: Limits) -> None:
    """Apply ``limits`` to the header's lists before any of their items is validated."""
    files = _member(document, "manifest", "files")
    if isinstance(files, list) and len(files) > limits.max_files:
        raise HeaderTooLargeError(f"{len(files)} files exceed the limit of {limits.max_files}")
    recipients = _member(document, "recipients")
    if isinstance(recipients, list) and len(recipients) > limits.max_recipients:
        raise HeaderTooLargeError(
            f"{len(recipients)} recipients exceed the limit of {limits.max_recipients}"
        )
    digests = _member(document, "payload", "segment_sha256")
    if isinstance(digests, list) and len(digests) > limits.max_segments:
        raise HeaderTooLargeError(
            f"{len(digests)} payload segments exceed the limit of {limits.max_segments}"
        )
    annotations = _member(document, "release", "annotations")
    if isinstance(annotations, dict) and len(annotations) > limits.max_annotations:
        raise _schema("release.annotations", f"must be an object of <= {limits.max_annotations}")


# --- The in-memory values ----------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One packaged file: normalised POSIX path, size in bytes, SHA-256 (hex)."""

    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """Return the header representation."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class ModelIdentity:
    """A model named by a human-readable name and a SHA-256 content digest (hex)."""

    name: str
    digest: str

    def __post_init__(self) -> None:
        _validate(_ModelDocument, self.to_json(), "model")

    def to_json(self) -> dict[str, Any]:
        """Return the header representation."""
        return {"name": self.name, "sha256": self.digest}

    @classmethod
    def _from_document(cls, document: _ModelDocument) -> ModelIdentity:
        return cls(document.name, document.sha256)


@dataclass(frozen=True)
class ReleaseInfo:
    """What is released, where and for how long; all of it is signed.

    ``version`` is monotonic per ``channel``; ``created_at`` and ``expires_at`` are Unix
    seconds (UTC); ``gate_decision_digest`` is the SHA-256 (hex) of the release gate's
    decision record. Every field is checked against the header schema on construction.
    """

    channel: str
    version: int
    created_at: int
    expires_at: int
    model: ModelIdentity
    base_model: ModelIdentity | None = None
    round_id: str | None = None
    gate_decision_digest: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _validate(_ReleaseDocument, self.to_json(), "release")

    def to_json(self) -> dict[str, Any]:
        """Return the header representation (optional fields omitted when unset)."""
        obj: dict[str, Any] = {
            "channel": self.channel,
            "version": self.version,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "model": self.model.to_json(),
            "annotations": dict(self.annotations),
        }
        if self.base_model is not None:
            obj["base_model"] = self.base_model.to_json()
        if self.round_id is not None:
            obj["round"] = self.round_id
        if self.gate_decision_digest is not None:
            obj["gate_decision_sha256"] = self.gate_decision_digest
        return obj

    @classmethod
    def _from_document(cls, document: _ReleaseDocument) -> ReleaseInfo:
        return cls(
            channel=document.channel,
            version=document.version,
            created_at=document.created_at,
            expires_at=document.expires_at,
            model=ModelIdentity._from_document(document.model),
            base_model=None
            if document.base_model is None
            else ModelIdentity._from_document(document.base_model),
            round_id=document.round,
            gate_decision_digest=document.gate_decision_sha256,
            annotations=dict(document.annotations),
        )


def _recipient_to_json(block: WrappedKey) -> dict[str, Any]:
    return {
        "recipient_id": block.recipient_id,
        "kem": KEM_ALGORITHM,
        "kem_ciphertext": base64.b64encode(block.kem_ciphertext).decode("ascii"),
        "wrapped_key": base64.b64encode(block.wrapped_key).decode("ascii"),
    }


def _recipient_from_document(document: _RecipientDocument) -> WrappedKey:
    return WrappedKey(
        document.recipient_id,
        base64.b64decode(document.kem_ciphertext),
        base64.b64decode(document.wrapped_key),
    )


def segment_count(chunks: int, segment_chunks: int) -> int:
    """Segments of ``segment_chunks`` chunks that hold ``chunks`` chunks (the last may be short)."""
    return -(-chunks // segment_chunks)


@dataclass(frozen=True)
class PayloadInfo:
    """Layout of the encrypted payload and the SHA-256 of each of its segments.

    Segment ``i`` is the sealed chunks ``i * segment_chunks`` up to (not including)
    ``(i + 1) * segment_chunks`` (fewer in the last segment); ``segment_sha256[i]`` is
    the SHA-256 (hex) of those sealed bytes, so segments can be checked independently.
    """

    chunk_size: int
    chunk_count: int
    length: int
    segment_chunks: int
    segment_sha256: tuple[str, ...]

    @property
    def sealed_chunk_size(self) -> int:
        """Bytes of one full sealed chunk (plaintext chunk plus the AES-GCM tag)."""
        return self.chunk_size + TAG_SIZE

    @property
    def segment_bytes(self) -> int:
        """Sealed bytes of a full segment (the last segment may be shorter)."""
        return self.segment_chunks * self.sealed_chunk_size

    def segment_span(self, index: int) -> tuple[int, int]:
        """(offset inside the payload, length) of segment ``index``'s sealed bytes."""
        start = index * self.segment_bytes
        return start, min(self.segment_bytes, self.length - start)

    def to_json(self) -> dict[str, Any]:
        """Return the header representation."""
        return {
            "aead": AEAD_ALGORITHM,
            "chunk_size": self.chunk_size,
            "chunk_count": self.chunk_count,
            "length": self.length,
            "segment_chunks": self.segment_chunks,
            "segment_sha256": list(self.segment_sha256),
        }


@dataclass(frozen=True)
class PackageHeader:
    """Everything the producer signs about a package."""

    package_id: str
    producer_key_id: str
    release: ReleaseInfo
    files: tuple[FileEntry, ...]
    recipients: tuple[WrappedKey, ...]
    payload: PayloadInfo

    @property
    def total_size(self) -> int:
        """Sum of all file sizes (the plaintext payload length)."""
        return sum(entry.size for entry in self.files)

    def validate(self, limits: Limits) -> None:
        """Check the header against the wire schema, ``limits`` and the cross-field rules."""
        document = self.to_json()
        _check_counts(document, limits)
        _validate(_HeaderDocument, document, "")
        self._check_cross_fields(limits)

    def _check_cross_fields(self, limits: Limits) -> None:
        """Rules that span fields: order, uniqueness, sizes and payload geometry."""
        if not 0 < len(self.recipients) <= limits.max_recipients:
            raise HeaderTooLargeError(
                f"{len(self.recipients)} recipients; 1..{limits.max_recipients} allowed"
            )
        paths = [entry.path for entry in self.files]
        if paths != sorted(paths):
            raise _schema("manifest.files", "must be sorted by path (code point order)")
        check_path_set(paths)
        recipient_ids = [block.recipient_id for block in self.recipients]
        if recipient_ids != sorted(set(recipient_ids)):
            raise _schema("recipients", "must be unique and sorted by recipient_id")
        total = self.total_size
        if total > MAX_SAFE_INTEGER // 2:
            raise _schema("manifest.files", "total size too large")
        payload = self.payload
        if payload.chunk_count != chunk_count(total, payload.chunk_size):
            raise _schema("payload.chunk_count", "does not match the manifest sizes")
        if payload.length != ciphertext_length(total, payload.chunk_size):
            raise _schema("payload.length", "does not match the manifest sizes")
        segments = segment_count(payload.chunk_count, payload.segment_chunks)
        if segments > limits.max_segments:
            raise HeaderTooLargeError(
                f"{segments} payload segments exceed the limit of {limits.max_segments}; "
                "use larger segments (segment_chunks) or raise the limit on both ends"
            )
        if len(payload.segment_sha256) != segments:
            raise _schema(
                "payload.segment_sha256",
                f"lists {len(payload.segment_sha256)} digests; the geometry needs {segments}",
            )

    def to_json(self) -> dict[str, Any]:
        """Return the header as a JSON-ready object."""
        return {
            "format": "TGSP",
            "format_version": FORMAT_VERSION,
            "suite": SUITE,
            "package_id": self.package_id,
            "producer": {"key_id": self.producer_key_id, "algorithm": SIGNATURE_ALGORITHM},
            "release": self.release.to_json(),
            "manifest": {
                "file_count": len(self.files),
                "total_size": self.total_size,
                "files": [entry.to_json() for entry in self.files],
            },
            "recipients": [_recipient_to_json(block) for block in self.recipients],
            "payload": self.payload.to_json(),
        }

    def encode(self, limits: Limits) -> bytes:
        """Validate and return the canonical header bytes."""
        self.validate(limits)
        encoded = encode_header_json(self.to_json())
        if len(encoded) > limits.max_header_bytes:
            raise HeaderTooLargeError(
                f"header would be {len(encoded)} bytes; the limit is {limits.max_header_bytes}. "
                "Package fewer files or raise the limit on both ends"
            )
        return encoded

    @classmethod
    def from_json(cls, value: Any, limits: Limits) -> PackageHeader:
        """Parse and validate a decoded header object."""
        _check_counts(value, limits)
        document = _validate(_HeaderDocument, value, "")
        header = cls(
            package_id=document.package_id,
            producer_key_id=document.producer.key_id,
            release=ReleaseInfo._from_document(document.release),
            files=tuple(
                FileEntry(entry.path, entry.size, entry.sha256) for entry in document.manifest.files
            ),
            recipients=tuple(_recipient_from_document(item) for item in document.recipients),
            payload=PayloadInfo(
                chunk_size=document.payload.chunk_size,
                chunk_count=document.payload.chunk_count,
                length=document.payload.length,
                segment_chunks=document.payload.segment_chunks,
                segment_sha256=tuple(document.payload.segment_sha256),
            ),
        )
        if document.manifest.file_count != len(header.files):
            raise _schema("manifest.file_count", f"must be {len(header.files)}")
        if document.manifest.total_size != header.total_size:
            raise _schema("manifest.total_size", f"must be {header.total_size}")
        header._check_cross_fields(limits)
        return header


def decode_header(data: bytes, limits: Limits) -> PackageHeader:
    """Parse canonical header bytes into a validated :class:`PackageHeader`."""
    if len(data) > limits.max_header_bytes:
        raise HeaderTooLargeError(f"header is {len(data)} bytes; limit {limits.max_header_bytes}")
    return PackageHeader.from_json(decode_header_json(data), limits)


def sorted_recipients(blocks: Sequence[WrappedKey]) -> tuple[WrappedKey, ...]:
    """Order recipient blocks as the header requires (by recipient id)."""
    return tuple(sorted(blocks, key=lambda block: block.recipient_id))


__all__ = [
    "FileEntry",
    "ModelIdentity",
    "PackageHeader",
    "PayloadInfo",
    "ReleaseInfo",
    "decode_header",
    "decode_header_json",
    "encode_header_json",
    "segment_count",
    "sorted_recipients",
]
