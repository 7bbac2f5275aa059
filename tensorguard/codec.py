"""The one codec: RFC 8785 canonical JSON, strict JSON and YAML parsing, binary framing.

Everything TensorGuard signs or hashes is serialised by :func:`canonical_json`
(RFC 8785, the JSON Canonicalization Scheme): UTF-8, no insignificant whitespace,
object members sorted by the UTF-16 code units of their keys, ECMAScript number
formatting (``6.0`` is written ``6``), minimal string escaping. The same value always
gives the same bytes, so a digest or signature covers meaning, not formatting.

Everything TensorGuard reads is parsed strictly:

* :func:`parse_json` / :func:`parse_json_object` refuse invalid UTF-8, duplicate object
  keys (a second ``"site_id"`` must not silently win), ``NaN``/``Infinity``, nesting
  deep enough to exhaust the stack and, for objects, any other top-level value;
* :func:`parse_canonical_json` additionally refuses any byte string that is not the
  canonical encoding of its value, so exactly one encoding exists per signed document;
* :func:`load_strict_yaml` uses PyYAML's safe constructors and refuses duplicate keys.

Headers and records inside the binary formats are described by :class:`StrictModel`
subclasses (pydantic: unknown fields refused, no type coercion, immutable) and checked
with :func:`validate_model` on the output of :func:`parse_json_object`, so duplicate keys
stay refused and a missing, extra or mistyped field is named in the error.

Binary formats are a magic string, a one-byte version and big-endian length-prefixed
frames; :class:`FrameWriter` writes them and :class:`FrameReader` reads them with
bounds checks before every slice, limits on every length and no trailing bytes.

Every failure is a :class:`CodecError` (or a subclass) whose message names the
document (``what``) and the reason; areas wrap it in their own error type.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import TYPE_CHECKING, Any, Final, NoReturn, cast

import rfc8785

from tensorguard.errors import TensorGuardError

if TYPE_CHECKING:
    import yaml

    from tensorguard._codec_schema import (
        IsoTimestamp,
        Sha256Hex,
        StrictModel,
        describe_validation_error,
        validate_model,
    )

__all__ = [
    "MAX_SAFE_INTEGER",
    "CodecError",
    "FrameError",
    "FrameReader",
    "FrameWriter",
    "IsoTimestamp",
    "JSONFormatError",
    "SchemaError",
    "Sha256Hex",
    "StrictModel",
    "YAMLFormatError",
    "canonical_digest",
    "canonical_json",
    "describe_validation_error",
    "load_strict_yaml",
    "parse_canonical_json",
    "parse_json",
    "parse_json_object",
    "validate_model",
]

ByteString = bytes | bytearray | memoryview
_LENGTH_SIZES: Final = (1, 2, 4, 8)
MAX_SAFE_INTEGER: Final = 2**53 - 1
"""Largest integer RFC 8785 (and IEEE 754 doubles) represent exactly."""


class CodecError(TensorGuardError):
    """Bytes or text could not be encoded or decoded in a TensorGuard format."""


class JSONFormatError(CodecError):
    """A JSON document is malformed, ambiguous (duplicate keys) or not canonical."""


class YAMLFormatError(CodecError):
    """A YAML document is malformed or repeats a mapping key."""


class FrameError(CodecError):
    """A binary frame has the wrong magic or version, is truncated, oversize or trailed."""


class SchemaError(CodecError):
    """A parsed document has a missing, unknown or mistyped field or a value out of range."""


# --- canonical JSON ------------------------------------------------------------------
def canonical_json(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of a JSON-compatible value.

    Accepts dicts with string keys, lists, tuples, strings, booleans, ``None``,
    integers within +-(2**53 - 1) and finite floats; anything else raises
    :class:`JSONFormatError`.
    """
    try:
        return rfc8785.dumps(cast(Any, value))  # checked by rfc8785 at run time
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise JSONFormatError(
            f"cannot encode value as RFC 8785 canonical JSON: {exc}; only finite numbers, "
            "integers within +-(2**53 - 1), strings, booleans, null, lists and "
            "string-keyed objects are allowed"
        ) from exc


def canonical_digest(value: object) -> str:
    """Return the lower-case hex SHA-256 of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value)).hexdigest()


# --- strict JSON parsing -------------------------------------------------------------
def _decode_text(data: ByteString | str, what: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JSONFormatError(f"{what} is not valid UTF-8 (byte {exc.start})") from None


def parse_json(data: ByteString | str, *, what: str, allow_floats: bool = True) -> Any:
    """Parse one JSON value strictly; raise :class:`JSONFormatError` naming ``what``.

    Refused: invalid UTF-8, duplicate object keys, ``NaN``/``Infinity``/``-Infinity``,
    nesting deep enough to exhaust the interpreter stack, integer literals too long to
    convert and, when ``allow_floats`` is false, any number with a fraction or exponent
    and any integer outside +-(2**53 - 1).

    RFC 8785 numbers are IEEE 754 doubles, and it writes a double such as ``1e20`` as the
    integer literal ``100000000000000000000``; so with ``allow_floats`` an integer
    literal outside +-(2**53 - 1) is read as the double it denotes, which makes
    ``parse_json(canonical_json(x)) == x`` hold for every encodable ``x``.
    """
    text = _decode_text(data, what)

    def unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        document: dict[str, Any] = {}
        for key, item in pairs:
            if key in document:
                raise JSONFormatError(f"{what} repeats the object key {key!r}")
            document[key] = item
        return document

    def refuse_constant(name: str) -> NoReturn:
        raise JSONFormatError(f"{what} contains the non-finite number {name}")

    def refuse_float(literal: str) -> NoReturn:
        raise JSONFormatError(f"{what} contains the non-integer number {literal[:20]!r}")

    def read_integer(literal: str) -> int | float:
        number = int(literal)
        if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            return number
        if allow_floats and abs(number) < 2**1024:
            return float(number)
        raise JSONFormatError(f"{what} contains the integer {literal[:20]} outside +-(2**53 - 1)")

    try:
        return json.loads(
            text,
            object_pairs_hook=unique_object,
            parse_constant=refuse_constant,
            parse_float=None if allow_floats else refuse_float,
            parse_int=read_integer,
        )
    except RecursionError:
        raise JSONFormatError(f"{what} nests too deeply") from None
    except json.JSONDecodeError as exc:
        raise JSONFormatError(f"{what} is not JSON: {exc.msg} at character {exc.pos}") from None
    except ValueError as exc:  # e.g. an integer literal beyond the interpreter's digit limit
        raise JSONFormatError(f"{what} is not acceptable JSON: {exc}") from None


def parse_json_object(
    data: ByteString | str, *, what: str, allow_floats: bool = True
) -> dict[str, Any]:
    """Parse a JSON document whose top level must be an object (see :func:`parse_json`)."""
    document = parse_json(data, what=what, allow_floats=allow_floats)
    if not isinstance(document, dict):
        raise JSONFormatError(
            f"{what} must be a JSON object at the top level, not {_json_type(document)}"
        )
    return document


def parse_canonical_json(data: ByteString, *, what: str, allow_floats: bool = True) -> Any:
    """Parse ``data`` strictly and refuse it unless it is the RFC 8785 form of its value."""
    value = parse_json(data, what=what, allow_floats=allow_floats)
    try:
        encoded = canonical_json(value)
    except JSONFormatError as exc:
        raise JSONFormatError(f"{what} has no canonical form: {exc}") from None
    if encoded != bytes(data):
        raise JSONFormatError(
            f"{what} is valid JSON but not in RFC 8785 canonical form (key order, spacing, "
            "escaping or number format differ)"
        )
    return value


def _json_type(value: object) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


# --- schemas: strict pydantic models for headers and records ---------------------------
# StrictModel, validate_model and describe_validation_error live in
# tensorguard._codec_schema and are imported on first use (PEP 562), so a command that
# only needs canonical JSON (``tensorguard tgsp verify``) does not pay pydantic's import.
_SCHEMA_NAMES: Final = frozenset(
    {"IsoTimestamp", "Sha256Hex", "StrictModel", "describe_validation_error", "validate_model"}
)


def __getattr__(name: str) -> Any:
    if name in _SCHEMA_NAMES:
        from tensorguard import _codec_schema

        return getattr(_codec_schema, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- strict YAML ---------------------------------------------------------------------
@functools.cache
def _unique_key_loader() -> type[yaml.SafeLoader]:
    """A safe YAML loader that refuses duplicate mapping keys (PyYAML imported on first use)."""
    import yaml

    def construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        loader.flatten_mapping(node)
        mapping: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in mapping:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            mapping[key] = loader.construct_object(value_node, deep=True)
        return mapping

    class UniqueKeySafeLoader(yaml.SafeLoader):
        """A safe YAML loader that refuses duplicate mapping keys instead of keeping the last."""

    UniqueKeySafeLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_unique_mapping
    )
    return UniqueKeySafeLoader


def load_strict_yaml(text: str, *, what: str = "YAML document") -> object:
    """Parse YAML with safe constructors only; duplicate mapping keys are refused.

    PyYAML's ``safe_load`` silently keeps the last of two equal keys, which lets a
    second, forgotten ``max_eval_loss:`` or site entry override the first. Raises
    :class:`YAMLFormatError` naming ``what`` and the line of the problem.
    """
    import yaml

    try:
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise YAMLFormatError(f"{what} is not valid YAML: {exc}") from None


# --- binary framing ------------------------------------------------------------------
def _check_length_size(length_size: int) -> None:
    if length_size not in _LENGTH_SIZES:
        raise ValueError(f"length prefixes are 1, 2, 4 or 8 bytes, not {length_size}")


class FrameWriter:
    """Builds ``magic | version u8 | fields...`` with big-endian integers.

    ``FrameWriter(b"TGFU", 1).frame(header, length_size=4).to_bytes()`` gives
    ``b"TGFU" 01 <len u32> <header>``.
    """

    def __init__(self, magic: bytes, version: int) -> None:
        """Start a buffer with ``magic`` and the one-byte format ``version``."""
        self._parts: list[ByteString] = [magic]
        self.uint(version, 1)

    def uint(self, value: int, size: int) -> FrameWriter:
        """Append an unsigned big-endian integer of ``size`` bytes."""
        _check_length_size(size)
        if not 0 <= value < 1 << (8 * size):
            raise FrameError(f"value {value} does not fit in an unsigned {size}-byte field")
        self._parts.append(value.to_bytes(size, "big"))
        return self

    def frame(self, data: ByteString, *, length_size: int) -> FrameWriter:
        """Append ``len(data)`` as a ``length_size``-byte integer, then ``data``."""
        self.uint(len(data), length_size)
        self._parts.append(data)
        return self

    def raw(self, data: ByteString) -> FrameWriter:
        """Append ``data`` without a length (the last field, running to the end)."""
        self._parts.append(data)
        return self

    def to_bytes(self) -> bytes:
        """The bytes written so far."""
        return b"".join(self._parts)


class FrameReader:
    """Reads what :class:`FrameWriter` writes, checking bounds before every slice.

    The constructor checks the magic and the version; :meth:`frame` checks the length
    against ``max_bytes`` and against the bytes present; :meth:`finish` refuses
    trailing bytes. Every failure is a :class:`FrameError` naming ``what``.
    """

    def __init__(self, data: ByteString, *, magic: bytes, version: int, what: str) -> None:
        """Check ``magic`` and the one-byte ``version`` at the start of ``data``."""
        self._view = memoryview(data).cast("B")
        self._offset = 0
        self.what = what
        start = bytes(self._view[: len(magic)])
        if not start:
            raise FrameError(f"{what} is empty")
        if start != magic[: len(start)]:
            raise FrameError(f"not a {what} (bad magic bytes)")
        if len(start) < len(magic):
            raise FrameError(f"{what} is truncated in its magic bytes")
        self._offset = len(magic)
        found = self.uint(1, "version")
        if found != version:
            raise FrameError(
                f"{what} version {found} is not supported (this build reads version {version})"
            )

    @property
    def offset(self) -> int:
        """Number of bytes consumed so far."""
        return self._offset

    @property
    def remaining(self) -> int:
        """Number of bytes not yet consumed."""
        return len(self._view) - self._offset

    def _take(self, size: int, field: str) -> memoryview:
        if size > self.remaining:
            raise FrameError(
                f"{self.what} is truncated in its {field} ({size} bytes needed, "
                f"{self.remaining} left)"
            )
        piece = self._view[self._offset : self._offset + size]
        self._offset += size
        return piece

    def uint(self, size: int, field: str) -> int:
        """Read an unsigned big-endian integer of ``size`` bytes."""
        _check_length_size(size)
        return int.from_bytes(self._take(size, field), "big")

    def frame_view(self, *, length_size: int, max_bytes: int | None, field: str) -> memoryview:
        """Read a length-prefixed field without copying it (a read-only view)."""
        length = self.uint(length_size, f"{field} length")
        if max_bytes is not None and length > max_bytes:
            raise FrameError(
                f"{self.what} {field} of {length} bytes exceeds the {max_bytes}-byte limit"
            )
        return self._take(length, field).toreadonly()

    def frame(self, *, length_size: int, max_bytes: int | None, field: str) -> bytes:
        """Read a length-prefixed field (a copy)."""
        return bytes(self.frame_view(length_size=length_size, max_bytes=max_bytes, field=field))

    def rest(self) -> memoryview:
        """Everything not yet consumed, as a read-only view; the reader is then finished."""
        return self._take(self.remaining, "remainder").toreadonly()

    def finish(self) -> None:
        """Refuse bytes after the last field."""
        if self.remaining:
            raise FrameError(f"{self.what} has {self.remaining} trailing bytes after its end")
