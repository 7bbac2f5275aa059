"""The signed TGSP v3 header: data model, canonical encoding and strict schema checks.

Every field is validated both when a header is built and when one is parsed, so a
builder cannot emit a header that a reader would refuse and a reader refuses anything
a builder could not have produced. See ``docs/TGSP.md`` for the field reference.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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

_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_CHANNEL = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_ANNOTATION_KEY = re.compile(r"[a-z0-9][a-z0-9._/-]{0,63}")
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


def _object(
    value: Any, where: str, required: set[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _schema(where, "must be an object")
    missing = required - value.keys()
    unknown = value.keys() - required - optional
    if missing:
        raise _schema(where, f"missing {sorted(missing)}")
    if unknown:
        raise _schema(where, f"unknown {sorted(unknown)[:5]}")
    return value


def _integer(value: Any, where: str, minimum: int = 0, maximum: int = MAX_SAFE_INTEGER) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise _schema(where, f"must be an integer in {minimum}..{maximum}")
    return value


def _text(value: Any, where: str, pattern: re.Pattern[str] | None = None) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT_LENGTH:
        raise _schema(where, f"must be a string of 1..{MAX_TEXT_LENGTH} characters")
    if pattern is not None and not pattern.fullmatch(value):
        raise _schema(where, f"does not match {pattern.pattern}")
    if any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in value):
        raise _schema(where, "contains control or format characters")
    return value


def _constant(value: Any, where: str, expected: object) -> None:
    if value != expected or type(value) is not type(expected):
        raise _schema(where, f"must be {expected!r}")


def _base64(value: Any, where: str, size: int) -> bytes:
    if not isinstance(value, str):
        raise _schema(where, "must be a base64 string")
    try:
        decoded = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise _schema(where, "is not valid base64") from exc
    if len(decoded) != size or base64.b64encode(decoded).decode("ascii") != value:
        raise _schema(where, f"must be the canonical base64 of exactly {size} bytes")
    return decoded


@dataclass(frozen=True)
class FileEntry:
    """One packaged file: normalised POSIX path, size in bytes, SHA-256 (hex)."""

    path: str
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        """Return the header representation."""
        return {"path": self.path, "size": self.size, "sha256": self.sha256}

    @classmethod
    def from_json(cls, value: Any, where: str) -> FileEntry:
        """Parse and validate one manifest entry."""
        obj = _object(value, where, {"path", "size", "sha256"})
        if not isinstance(obj["path"], str):
            raise _schema(f"{where}.path", "must be a string")
        return cls(
            validate_archive_path(obj["path"]),
            _integer(obj["size"], f"{where}.size"),
            _text(obj["sha256"], f"{where}.sha256", _HEX64),
        )


@dataclass(frozen=True)
class ModelIdentity:
    """A model named by a human-readable name and a SHA-256 content digest (hex)."""

    name: str
    digest: str

    def __post_init__(self) -> None:
        _text(self.name, "model.name")
        _text(self.digest, "model.digest", _HEX64)

    def to_json(self) -> dict[str, Any]:
        """Return the header representation."""
        return {"name": self.name, "sha256": self.digest}

    @classmethod
    def from_json(cls, value: Any, where: str) -> ModelIdentity:
        """Parse and validate a model identity."""
        obj = _object(value, where, {"name", "sha256"})
        return cls(_text(obj["name"], f"{where}.name"), _text(obj["sha256"], f"{where}.sha256"))


@dataclass(frozen=True)
class ReleaseInfo:
    """What is released, where and for how long; all of it is signed.

    ``version`` is monotonic per ``channel``; ``created_at`` and ``expires_at`` are Unix
    seconds (UTC); ``gate_decision_digest`` is the SHA-256 (hex) of the release gate's
    decision record.
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
        _text(self.channel, "release.channel", _CHANNEL)
        _integer(self.version, "release.version")
        _integer(self.created_at, "release.created_at")
        _integer(self.expires_at, "release.expires_at")
        if self.expires_at <= self.created_at:
            raise _schema("release.expires_at", "must be later than created_at")
        if self.round_id is not None:
            _text(self.round_id, "release.round")
        if self.gate_decision_digest is not None:
            _text(self.gate_decision_digest, "release.gate_decision_sha256", _HEX64)
        for key, value in self.annotations.items():
            _text(key, "release.annotations key", _ANNOTATION_KEY)
            _text(value, f"release.annotations[{key!r}]")

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
    def from_json(cls, value: Any, limits: Limits) -> ReleaseInfo:
        """Parse and validate the release block."""
        obj = _object(
            value,
            "release",
            {"channel", "version", "created_at", "expires_at", "model", "annotations"},
            frozenset({"base_model", "round", "gate_decision_sha256"}),
        )
        annotations = obj["annotations"]
        if not isinstance(annotations, dict) or len(annotations) > limits.max_annotations:
            raise _schema(
                "release.annotations", f"must be an object of <= {limits.max_annotations}"
            )
        base_model = obj.get("base_model")
        return cls(
            channel=obj["channel"],
            version=obj["version"],
            created_at=obj["created_at"],
            expires_at=obj["expires_at"],
            model=ModelIdentity.from_json(obj["model"], "release.model"),
            base_model=None
            if base_model is None
            else ModelIdentity.from_json(base_model, "release.base_model"),
            round_id=obj.get("round"),
            gate_decision_digest=obj.get("gate_decision_sha256"),
            annotations=annotations,
        )


def _recipient_to_json(block: WrappedKey) -> dict[str, Any]:
    return {
        "recipient_id": block.recipient_id,
        "kem": KEM_ALGORITHM,
        "kem_ciphertext": base64.b64encode(block.kem_ciphertext).decode("ascii"),
        "wrapped_key": base64.b64encode(block.wrapped_key).decode("ascii"),
    }


def _recipient_from_json(value: Any, where: str) -> WrappedKey:
    obj = _object(value, where, {"recipient_id", "kem", "kem_ciphertext", "wrapped_key"})
    _constant(obj["kem"], f"{where}.kem", KEM_ALGORITHM)
    return WrappedKey(
        _text(obj["recipient_id"], f"{where}.recipient_id", _HEX64),
        _base64(obj["kem_ciphertext"], f"{where}.kem_ciphertext", XWING_CIPHERTEXT_SIZE),
        _base64(obj["wrapped_key"], f"{where}.wrapped_key", WRAPPED_KEY_SIZE),
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

    @classmethod
    def from_json(cls, value: Any, limits: Limits) -> PayloadInfo:
        """Parse and validate the payload block (the segment list bounded by ``limits``)."""
        obj = _object(
            value,
            "payload",
            {"aead", "chunk_size", "chunk_count", "length", "segment_chunks", "segment_sha256"},
        )
        _constant(obj["aead"], "payload.aead", AEAD_ALGORITHM)
        digests = obj["segment_sha256"]
        if not isinstance(digests, list):
            raise _schema("payload.segment_sha256", "must be an array")
        if len(digests) > limits.max_segments:
            raise HeaderTooLargeError(
                f"{len(digests)} payload segments exceed the limit of {limits.max_segments}"
            )
        return cls(
            _integer(obj["chunk_size"], "payload.chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
            _integer(obj["chunk_count"], "payload.chunk_count", 1),
            _integer(obj["length"], "payload.length"),
            _integer(obj["segment_chunks"], "payload.segment_chunks", 1, MAX_SEGMENT_CHUNKS),
            tuple(
                _text(item, f"payload.segment_sha256[{index}]", _HEX64)
                for index, item in enumerate(digests)
            ),
        )


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
        """Check cross-field rules: order, uniqueness, sizes and payload geometry."""
        _text(self.package_id, "package_id", _HEX32)
        _text(self.producer_key_id, "producer.key_id", _HEX64)
        if len(self.files) > limits.max_files:
            raise HeaderTooLargeError(
                f"{len(self.files)} files exceed the limit of {limits.max_files}"
            )
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
        if not 1 <= payload.segment_chunks <= MAX_SEGMENT_CHUNKS:
            raise _schema("payload.segment_chunks", f"must be 1..{MAX_SEGMENT_CHUNKS}")
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
        for index, digest in enumerate(payload.segment_sha256):
            if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
                raise _schema(f"payload.segment_sha256[{index}]", "must be 64 lower-case hex")

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
        obj = _object(
            value,
            "header",
            {
                "format",
                "format_version",
                "suite",
                "package_id",
                "producer",
                "release",
                "manifest",
                "recipients",
                "payload",
            },
        )
        _constant(obj["format"], "format", "TGSP")
        _constant(obj["format_version"], "format_version", FORMAT_VERSION)
        _constant(obj["suite"], "suite", SUITE)
        producer = _object(obj["producer"], "producer", {"key_id", "algorithm"})
        _constant(producer["algorithm"], "producer.algorithm", SIGNATURE_ALGORITHM)
        manifest = _object(obj["manifest"], "manifest", {"file_count", "total_size", "files"})
        raw_files = manifest["files"]
        if not isinstance(raw_files, list):
            raise _schema("manifest.files", "must be an array")
        if len(raw_files) > limits.max_files:
            raise HeaderTooLargeError(
                f"{len(raw_files)} files exceed the limit of {limits.max_files}"
            )
        raw_recipients = obj["recipients"]
        if not isinstance(raw_recipients, list):
            raise _schema("recipients", "must be an array")
        if len(raw_recipients) > limits.max_recipients:
            raise HeaderTooLargeError(
                f"{len(raw_recipients)} recipients exceed the limit of {limits.max_recipients}"
            )
        try:
            header = cls(
                package_id=_text(obj["package_id"], "package_id", _HEX32),
                producer_key_id=_text(producer["key_id"], "producer.key_id", _HEX64),
                release=ReleaseInfo.from_json(obj["release"], limits),
                files=tuple(
                    FileEntry.from_json(item, f"manifest.files[{index}]")
                    for index, item in enumerate(raw_files)
                ),
                recipients=tuple(
                    _recipient_from_json(item, f"recipients[{index}]")
                    for index, item in enumerate(raw_recipients)
                ),
                payload=PayloadInfo.from_json(obj["payload"], limits),
            )
        except (TypeError, ValueError) as exc:
            raise _schema("header", f"invalid value ({exc})") from exc
        _constant(manifest["file_count"], "manifest.file_count", len(header.files))
        _constant(manifest["total_size"], "manifest.total_size", header.total_size)
        header.validate(limits)
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
