"""The TGSP header's JSON subset, refusal wording and size bounds, pinned exactly (#18 item 6).

``tensorguard/tgsp/_header.py`` keeps every header inside TGSP's JSON subset (objects
with ASCII keys, arrays, strings, integers in 0..2**53-1, at most 32 levels deep), on
the way out (:func:`encode_header_json`) and on the way in (:func:`decode_header_json`).
Its schema refusals name each bad field by its header path in JSON's words, at most
five of them and a count of the rest; its limits (files, recipients, segments,
annotations, header bytes) are inclusive bounds with messages an operator acts on.
These tests pin each of those rules at its exact bound and each message in full, from
the mutation run of that module: a changed bound, a dropped check or a reworded message
turns one of them red.
"""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

import pytest

from tensorguard.crypto import CIPHERTEXT_SIZE, WRAPPED_KEY_SIZE
from tensorguard.tgsp import (
    DEFAULT_LIMITS,
    FileEntry,
    HeaderEncodingError,
    HeaderSchemaError,
    HeaderTooLargeError,
    Limits,
    PackageHeader,
)
from tensorguard.tgsp._format import SUITE as SUITE_NAME
from tensorguard.tgsp._header import decode_header, decode_header_json, encode_header_json
from tests.tgsp.test_header_schema import _document, _header

SUBSET = "only objects, arrays, strings and non-negative integers are allowed"


def _nested_lists(levels: int) -> object:
    value: object = 0
    for _ in range(levels):
        value = [value]
    return value


def _nested_objects(levels: int) -> object:
    value: object = 0
    for _ in range(levels):
        value = {"a": value}
    return value


# --- the JSON subset, encoding side ------------------------------------------------------


@pytest.mark.parametrize("nest", [_nested_lists, _nested_objects], ids=["arrays", "objects"])
def test_nesting_of_exactly_32_levels_is_the_limit(nest: Any) -> None:
    deepest = nest(32)
    assert decode_header_json(encode_header_json(deepest)) == deepest
    with pytest.raises(HeaderEncodingError) as refused:
        encode_header_json(nest(33))
    assert str(refused.value) == "header nests deeper than 32 levels"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, f"header contains a bool; {SUBSET}"),
        (None, f"header contains a NoneType; {SUBSET}"),
        (1.5, f"header contains a float; {SUBSET}"),
        ({"a": [1, False]}, f"header contains a bool; {SUBSET}"),
        ({"a": {"b": None}}, f"header contains a NoneType; {SUBSET}"),
        (-1, "integer -1 outside 0..2**53-1"),
        ([2**53], "integer 9007199254740992 outside 0..2**53-1"),
        ({"k": "x\ud800"}, "string is not valid Unicode (lone surrogate)"),
        ({"\u00e9": 1}, "object key '\u00e9' is not an ASCII string"),
        ({1: "a"}, "object key 1 is not an ASCII string"),
        ((1, 2), "cannot encode tuple in a header"),
        ([b"raw"], "cannot encode bytes in a header"),
    ],
    ids=[
        "bool",
        "null",
        "float",
        "bool in an array",
        "null in an object",
        "negative",
        "2^53",
        "lone surrogate",
        "non-ASCII key",
        "integer key",
        "tuple",
        "bytes",
    ],
)
def test_values_outside_the_subset_are_refused_with_their_reason(
    value: object, message: str
) -> None:
    with pytest.raises(HeaderEncodingError) as refused:
        encode_header_json(value)
    assert str(refused.value) == message


def test_the_integer_range_is_inclusive_at_both_ends() -> None:
    value = {"low": 0, "high": 2**53 - 1}
    encoded = encode_header_json(value)
    assert encoded == b'{"high":9007199254740991,"low":0}'
    assert decode_header_json(encoded) == value


# --- the JSON subset, decoding side ------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a":1.5}', "TGSP header contains the non-integer number '1.5'"),
        (b"[9007199254740992]", "TGSP header contains the integer 9007199254740992 outside "
         "+-(2**53 - 1)"),
        (b'{"a":1,"a":2}', "TGSP header repeats the object key 'a'"),
        (b'{"b":1,"a":2}', "TGSP header is valid JSON but not in RFC 8785 canonical form "
         "(key order, spacing, escaping or number format differ)"),
        (b"[-1]", "integer -1 outside 0..2**53-1"),
        (b"[true]", f"header contains a bool; {SUBSET}"),
        (b'{"a":null}', f"header contains a NoneType; {SUBSET}"),
        (b"[" * 33 + b"0" + b"]" * 33, "header nests deeper than 32 levels"),
    ],
    ids=["float", "2^53", "duplicate key", "key order", "negative", "bool", "null", "depth 33"],
)  # fmt: skip
def test_decoding_refuses_what_the_subset_or_the_canonical_form_does_not_allow(
    data: bytes, message: str
) -> None:
    with pytest.raises(HeaderEncodingError) as refused:
        decode_header_json(data)
    assert str(refused.value) == message


# --- schema refusals: wording and count --------------------------------------------------


def _refusal(document: object, limits: Limits = DEFAULT_LIMITS) -> str:
    with pytest.raises(HeaderSchemaError) as refused:
        PackageHeader.from_json(document, limits)
    return str(refused.value)


def test_a_header_that_is_not_an_object_is_named_as_the_header() -> None:
    assert _refusal([]) == "header field header: must be an object"


def _with_problems(count: int) -> dict[str, Any]:
    document = _document()
    changes = [  # in the schema's field order, which is the order they are reported in
        ("format", "TGSQ"),
        ("format_version", 2),
        ("suite", "classical-only"),
        ("package_id", "x"),
        ("release", []),
        ("manifest", []),
        ("payload", []),
    ]
    for key, value in changes[:count]:
        document[key] = value
    return document


FORMAT = "header field format: must be 'TGSP'"
VERSION = "header field format_version: must be 3"
SUITE = f"header field suite: must be {SUITE_NAME!r}"
PACKAGE_ID = "header field package_id: String should match pattern '^[0-9a-f]{32}$'"
RELEASE = "header field release: must be an object"


def test_at_most_five_problems_are_listed_then_a_count_of_the_rest() -> None:
    assert _refusal(_with_problems(2)) == f"{FORMAT}; {VERSION}"
    five = f"{FORMAT}; {VERSION}; {SUITE}; {PACKAGE_ID}; {RELEASE}"
    assert _refusal(_with_problems(5)) == five
    assert _refusal(_with_problems(6)) == f"{five} (and 1 more)"
    assert _refusal(_with_problems(7)) == f"{five} (and 2 more)"


def test_value_rules_report_their_own_words_not_pydantic_s() -> None:
    document = _document()
    document["release"]["model"]["name"] = "tiny\u0007"
    assert _refusal(document) == (
        "header field release.model.name: contains control or format characters"
    )
    document = _document()
    document["release"]["expires_at"] = document["release"]["created_at"]
    assert _refusal(document) == "header field release: expires_at must be later than created_at"


def test_the_build_side_names_fields_by_their_header_path() -> None:
    bad = dataclasses.replace(_header(), package_id="x")
    with pytest.raises(HeaderSchemaError) as refused:
        bad.encode(DEFAULT_LIMITS)
    assert str(refused.value) == PACKAGE_ID


# --- canonical base64 of the recipient blocks --------------------------------------------


def _canonical(size: int) -> str:
    return base64.b64encode(bytes(range(256)) * (size // 256) + bytes(size % 256)).decode()


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("kem_ciphertext", "\u00e9" * 8, "is not valid base64"),
        ("kem_ciphertext", "AAAA*", "is not valid base64"),
        ("kem_ciphertext", "AAAA",
         f"must be the canonical base64 of exactly {CIPHERTEXT_SIZE} bytes"),
        # the right length, but the last quantum has padding bits set: not canonical
        ("kem_ciphertext", _canonical(CIPHERTEXT_SIZE)[:-3] + "B==",
         f"must be the canonical base64 of exactly {CIPHERTEXT_SIZE} bytes"),
        ("wrapped_key", _canonical(WRAPPED_KEY_SIZE) + "AAAA",
         f"must be the canonical base64 of exactly {WRAPPED_KEY_SIZE} bytes"),
    ],
    ids=["non-ASCII", "outside the alphabet", "too short", "padding bits set", "too long"],
)  # fmt: skip
def test_recipient_blocks_must_be_canonical_base64_of_their_size(
    field: str, value: str, problem: str
) -> None:
    document = _document()
    document["recipients"][0][field] = value
    assert _refusal(document) == f"header field recipients[0].{field}: {problem}"


def test_canonical_base64_of_the_right_sizes_is_read_back_as_those_bytes() -> None:
    document = _document()
    document["recipients"][0]["kem_ciphertext"] = _canonical(CIPHERTEXT_SIZE)
    document["recipients"][0]["wrapped_key"] = _canonical(WRAPPED_KEY_SIZE)
    header = PackageHeader.from_json(document, DEFAULT_LIMITS)
    block = header.recipients[0]
    assert base64.b64encode(block.kem_ciphertext).decode() == _canonical(CIPHERTEXT_SIZE)
    assert base64.b64encode(block.wrapped_key).decode() == _canonical(WRAPPED_KEY_SIZE)
    assert header.to_json()["recipients"] == document["recipients"]


# --- limits: each one inclusive, each one applied on the build side too ------------------


def test_each_count_limit_is_inclusive() -> None:
    document = _document()  # 2 files, 1 recipient, 1 segment, 1 annotation
    exact = Limits(max_files=2, max_recipients=1, max_segments=1, max_annotations=1)
    assert PackageHeader.from_json(document, exact) == _header()
    assert _header().encode(exact) == _header().encode(DEFAULT_LIMITS)


def test_the_build_side_applies_the_file_and_annotation_limits() -> None:
    with pytest.raises(HeaderTooLargeError) as refused:
        _header().encode(Limits(max_files=1))
    assert str(refused.value) == "2 files exceed the limit of 1"
    many = dataclasses.replace(
        _header().release, annotations={"team/owner": "ml-platform", "stage": "canary"}
    )
    with pytest.raises(HeaderSchemaError) as schema:
        dataclasses.replace(_header(), release=many).encode(Limits(max_annotations=1))
    assert str(schema.value) == "header field release.annotations: must be an object of <= 1"


def test_the_encoded_header_size_limit_is_inclusive() -> None:
    header = _header()
    encoded = header.encode(DEFAULT_LIMITS)
    size = len(encoded)
    assert header.encode(Limits(max_header_bytes=size)) == encoded
    with pytest.raises(HeaderTooLargeError) as refused:
        header.encode(Limits(max_header_bytes=size - 1))
    assert str(refused.value) == (
        f"header would be {size} bytes; the limit is {size - 1}. "
        "Package fewer files or raise the limit on both ends"
    )


def test_the_decoded_header_size_limit_is_inclusive() -> None:
    encoded = _header().encode(DEFAULT_LIMITS)
    size = len(encoded)
    assert decode_header(encoded, Limits(max_header_bytes=size)) == _header()
    with pytest.raises(HeaderTooLargeError) as refused:
        decode_header(encoded, Limits(max_header_bytes=size - 1))
    assert str(refused.value) == f"header is {size} bytes; limit {size - 1}"


# --- cross-field refusals in full --------------------------------------------------------


def test_unsorted_files_and_a_wrong_length_are_refused_in_full() -> None:
    document = _document()
    document["manifest"]["files"].reverse()
    assert _refusal(document) == (
        "header field manifest.files: must be sorted by path (code point order)"
    )
    document = _document()
    document["payload"]["length"] += 1
    assert _refusal(document) == "header field payload.length: does not match the manifest sizes"


def test_unsorted_files_are_refused_on_the_build_side() -> None:
    header = _header()
    swapped = dataclasses.replace(header, files=tuple(reversed(header.files)))
    with pytest.raises(HeaderSchemaError) as refused:
        swapped.encode(DEFAULT_LIMITS)
    assert str(refused.value) == (
        "header field manifest.files: must be sorted by path (code point order)"
    )
    assert FileEntry("a.bin", 3000, "a" * 64) in header.files
