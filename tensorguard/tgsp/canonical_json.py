"""Canonical JSON for TGSP headers: the RFC 8785 (JCS) subset without numbers' fractions.

TGSP headers use only objects, arrays, strings and non-negative integers up to
``2**53 - 1``. For that subset RFC 8785 canonical form is: UTF-8, no insignificant
whitespace, object members sorted by key (keys are ASCII, so code-point order equals
UTF-16 order), minimal string escaping (``\\"``, ``\\\\``, ``\\b \\f \\n \\r \\t`` and
``\\u00xx`` for other control characters), integers in shortest decimal form.

Encoding uses the ``rfc8785`` library after checking the value stays in that subset.
Decoding is strict: duplicate keys, floats, ``NaN``/``Infinity``, booleans, ``null``,
invalid UTF-8 and any byte sequence that does not re-encode to itself are refused, so
exactly one byte string represents each header and the signature covers its meaning.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import rfc8785

from tensorguard.tgsp.errors import HeaderEncodingError

MAX_SAFE_INTEGER = 2**53 - 1

JSONValue = dict[str, Any] | list[Any] | str | int


def _check_value(value: object, depth: int = 0) -> None:
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
            _check_value(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_value(item, depth + 1)
    else:
        raise HeaderEncodingError(f"cannot encode {type(value).__name__} in a header")


def canonical_dumps(value: JSONValue) -> bytes:
    """Return the canonical UTF-8 encoding of ``value``."""
    _check_value(value)
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise HeaderEncodingError(f"value cannot be canonicalised: {exc}") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise HeaderEncodingError(f"duplicate object key {key!r}")
        result[key] = value
    return result


def _refuse_number(text: str) -> NoReturn:
    raise HeaderEncodingError(f"non-integer number {text[:20]!r} in header")


def canonical_loads(data: bytes) -> Any:
    """Decode canonical JSON, refusing anything that is not in canonical form."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HeaderEncodingError("header is not valid UTF-8") from exc
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_refuse_number,
            parse_constant=_refuse_number,
        )
    except RecursionError as exc:
        raise HeaderEncodingError("header nests too deeply") from exc
    except json.JSONDecodeError as exc:
        raise HeaderEncodingError(f"header is not JSON: {exc.msg} at byte {exc.pos}") from exc
    except ValueError as exc:  # e.g. an integer literal beyond the interpreter's digit limit
        raise HeaderEncodingError(f"header is not acceptable JSON: {exc}") from exc
    if canonical_dumps(value) != data:
        raise HeaderEncodingError(
            "header is valid JSON but not in canonical form (key order, spacing, escaping "
            "or number format differ)"
        )
    return value
