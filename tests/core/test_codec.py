"""The one codec: RFC 8785 canonical JSON, strict JSON/YAML parsing and binary framing."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorguard.codec import (
    CodecError,
    FrameError,
    FrameReader,
    FrameWriter,
    IsoTimestamp,
    JSONFormatError,
    SchemaError,
    Sha256Hex,
    StrictModel,
    YAMLFormatError,
    canonical_digest,
    canonical_json,
    load_strict_yaml,
    parse_canonical_json,
    parse_json,
    parse_json_object,
    validate_model,
)
from tensorguard.crypto import CompositeSigningKey
from tensorguard.errors import TensorGuardError
from tensorguard.sites import SiteRegistryError, load_site_registry
from tensorguard.tgsp import KeyFileError, TrustStore, TrustStoreError
from tensorguard.tgsp._keyfiles import load_verify_key, write_key_file

# --- canonical JSON: RFC 8785 ----------------------------------------------------------


def test_keys_sort_by_utf16_code_units_not_code_points() -> None:
    # RFC 8785 section 3.2.3's example: U+1F600 is the surrogate pair D83D DE00, which
    # sorts before U+FB33 (code-point order would put it last).
    document = {"\u20ac": "Euro", "\r": "CR", "\ufb33": "Hebrew", "1": "One", "\U0001f600": "s"}
    encoded = canonical_json(document).decode("utf-8")
    order = [key for key in json.loads(encoded)]
    assert order == ["\r", "1", "\u20ac", "\U0001f600", "\ufb33"]
    assert order != sorted(document)  # Python's code-point order differs


@pytest.mark.parametrize(
    ("number", "text"),
    [
        (0.0, "0"),
        (-0.0, "0"),
        (6.0, "6"),
        (1e21, "1e+21"),
        (1e-7, "1e-7"),
        (0.000001, "0.000001"),
        (123456789012345680000.0, "123456789012345680000"),
        (4.50, "4.5"),
        (2e-3, "0.002"),
        (1e23, "1e+23"),
        (-1.5e-10, "-1.5e-10"),
        (9007199254740991, "9007199254740991"),
    ],
)
def test_numbers_use_ecmascript_formatting(number: float, text: str) -> None:
    assert canonical_json([number]) == f"[{text}]".encode()


def test_rfc8785_sample_document() -> None:
    # RFC 8785 section 3.2.2 (with the literal values of its sample input).
    document = {
        "numbers": [333333333.33333329, 1e30, 4.50, 2e-3, 0.000000000000000000000000001],
        "string": "\u20ac$\u000f\u000aA'\u0042\u0022\u005c\\\"/",
        "literals": [None, True, False],
    }
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonical_json(document) == expected.encode("utf-8")


def test_same_value_same_bytes_and_digest() -> None:
    first = {"b": 1.0, "a": [1, "x"], "c": {"z": None, "y": True}}
    second = {"c": {"y": True, "z": None}, "a": [1, "x"], "b": 1}
    assert (
        canonical_json(first)
        == canonical_json(second)
        == (b'{"a":[1,"x"],"b":1,"c":{"y":true,"z":null}}')
    )
    assert canonical_digest(first) == canonical_digest(second)
    assert len(canonical_digest(first)) == 64


@pytest.mark.parametrize(
    "value",
    [{"x": math.nan}, {"x": math.inf}, {"x": 2**53}, {1: "non-string key"}, {"x": object()}],
    ids=["nan", "inf", "unsafe-int", "int-key", "object"],
)
def test_values_without_a_canonical_form_are_refused(value: Any) -> None:
    with pytest.raises(JSONFormatError, match="RFC 8785"):
        canonical_json(value)


@settings(max_examples=200, deadline=None)
@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers(-(2**53) + 1, 2**53 - 1)
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(max_size=10).filter(lambda s: not any(0xD800 <= ord(c) < 0xE000 for c in s)),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=6), children, max_size=4)
        ),
        max_leaves=15,
    )
)
def test_canonical_json_round_trips_and_is_its_own_canonical_form(value: Any) -> None:
    encoded = canonical_json(value)
    assert parse_json(encoded, what="doc") == value
    assert parse_canonical_json(encoded, what="doc") == value
    assert canonical_json(parse_json(encoded, what="doc")) == encoded


# --- strict JSON parsing --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'{"site_id":"a","site_id":"b"}', "repeats the object key 'site_id'"),
        (b'{"x":{"k":1,"k":1}}', "repeats the object key 'k'"),
        (b'{"x":NaN}', "non-finite number NaN"),
        (b'{"x":Infinity}', "non-finite number Infinity"),
        (b'{"x":-Infinity}', "non-finite number -Infinity"),
        (b'{"x":', "is not JSON"),
        (b'{"x":"\xff"}', "not valid UTF-8"),
        (b"[" * 100_000, "nests too deeply|is not JSON"),
        (b"1" * 5000, "not acceptable JSON"),
        (b'{"x":' + b"9" * 400 + b"}", "outside"),
    ],
)
def test_ambiguous_or_malformed_json_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(JSONFormatError, match=reason) as refused:
        parse_json_object(data, what="envelope header")
    assert isinstance(refused.value, CodecError)
    assert isinstance(refused.value, TensorGuardError)


@pytest.mark.parametrize(
    ("data", "kind"),
    [(b"[1]", "an array"), (b'"x"', "a string"), (b"3", "a number"), (b"null", "null")],
)
def test_non_object_tops_are_refused(data: bytes, kind: str) -> None:
    with pytest.raises(JSONFormatError, match=f"key record header must be a JSON object.*{kind}"):
        parse_json_object(data, what="key record header")


def test_floats_can_be_refused_and_canonical_form_required() -> None:
    assert parse_json_object(b'{"a":1.5}', what="doc") == {"a": 1.5}
    with pytest.raises(JSONFormatError, match=r"non-integer number '1\.5'"):
        parse_json_object(b'{"a":1.5}', what="doc", allow_floats=False)
    unsafe = b'{"a":9007199254740992}'
    assert parse_json_object(unsafe, what="doc") == {"a": 9007199254740992.0}
    with pytest.raises(JSONFormatError, match="outside"):
        parse_json_object(unsafe, what="doc", allow_floats=False)
    assert parse_canonical_json(b'{"a":1,"b":[true]}', what="doc") == {"a": 1, "b": [True]}
    for not_canonical in (b'{"b":1,"a":2}', b'{"a": 1}', b'{"a":1.0}', b'"\\u00e9"'):
        with pytest.raises(JSONFormatError, match="not in RFC 8785 canonical form"):
            parse_canonical_json(not_canonical, what="doc")


# --- strict YAML ----------------------------------------------------------------------


def test_yaml_duplicate_keys_are_refused_at_any_depth() -> None:
    assert load_strict_yaml("a: 1\nb: {c: 2}\n") == {"a": 1, "b": {"c": 2}}
    with pytest.raises(YAMLFormatError, match=r"gate policy.*duplicate key 'max_eval_loss'"):
        load_strict_yaml("max_eval_loss: 1\nmax_eval_loss: 9\n", what="gate policy")
    with pytest.raises(YAMLFormatError, match="duplicate key 'id'"):
        load_strict_yaml("sites:\n  - id: a\n    id: b\n")


def test_yaml_refuses_unsafe_tags_and_syntax_errors() -> None:
    with pytest.raises(YAMLFormatError, match="not valid YAML"):
        load_strict_yaml("x: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(YAMLFormatError, match="not valid YAML"):
        load_strict_yaml("a: [1, 2\n")


def _write_registry(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def test_site_registry_with_a_repeated_key_is_refused(tmp_path: Path) -> None:
    good = _write_registry(tmp_path, "sites:\n  - id: hospital-north\n    data_dir: data/north\n")
    assert set(load_site_registry(good)) == {"hospital-north"}
    # Under plain safe_load the second public_key silently replaced the first.
    repeated = _write_registry(
        tmp_path,
        "sites:\n  - id: hospital-north\n    data_dir: data/north\n"
        "    public_key: keys/north.pub\n    public_key: keys/attacker.pub\n",
    )
    with pytest.raises(SiteRegistryError, match="duplicate key 'public_key'"):
        load_site_registry(repeated)
    twice = _write_registry(tmp_path, "sites:\n  - id: a\n    data_dir: x\nsites: []\n")
    with pytest.raises(SiteRegistryError, match="duplicate key 'sites'"):
        load_site_registry(twice)


def _repeat_first_key(text: str, key: str, value: str) -> str:
    """Insert a second ``"key": value`` member right after the opening brace."""
    return text.replace("{", "{" + json.dumps(key) + ": " + value + ",", 1)


def test_key_files_and_trust_stores_with_a_repeated_key_are_refused(tmp_path: Path) -> None:
    signing = CompositeSigningKey.generate()
    key_path = tmp_path / "release.pub"
    write_key_file(key_path, signing.public_key())
    assert load_verify_key(key_path).fingerprint() == signing.public_key().fingerprint()
    key_path.write_text(_repeat_first_key(key_path.read_text(), "type", '"x"'))
    with pytest.raises(KeyFileError, match="repeats the object key 'type'"):
        load_verify_key(key_path)

    store_path = tmp_path / "trust.json"
    TrustStore([signing.public_key()]).save(store_path)
    assert len(TrustStore.load(store_path)) == 1
    store_path.write_text(_repeat_first_key(store_path.read_text(), "keys", "[]"))
    with pytest.raises(TrustStoreError, match="repeats the object key 'keys'"):
        TrustStore.load(store_path)


# --- framing --------------------------------------------------------------------------

MAGIC = b"TGXX"


def _frame(header: bytes, body: bytes) -> bytes:
    return (
        FrameWriter(MAGIC, 3)
        .uint(7, 2)
        .frame(header, length_size=4)
        .frame(body, length_size=8)
        .to_bytes()
    )


def _read(data: bytes, max_header: int = 1024) -> tuple[int, bytes, bytes]:
    reader = FrameReader(data, magic=MAGIC, version=3, what="test frame")
    number = reader.uint(2, "number")
    header = reader.frame(length_size=4, max_bytes=max_header, field="header")
    body = bytes(reader.frame_view(length_size=8, max_bytes=None, field="body"))
    reader.finish()
    return number, header, body


def test_frame_layout_is_magic_version_and_big_endian_lengths() -> None:
    assert _frame(b"hd", b"xyz") == (
        b"TGXX\x03\x00\x07\x00\x00\x00\x02hd\x00\x00\x00\x00\x00\x00\x00\x03xyz"
    )
    assert _read(_frame(b"hd", b"xyz")) == (7, b"hd", b"xyz")


@settings(max_examples=200, deadline=None)
@given(header=st.binary(max_size=64), body=st.binary(max_size=64), data=st.data())
def test_frames_round_trip_and_every_truncation_or_extension_is_refused(
    header: bytes, body: bytes, data: st.DataObject
) -> None:
    encoded = _frame(header, body)
    assert _read(encoded) == (7, header, body)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(FrameError, match=r"truncated|is empty"):
        _read(encoded[:cut])
    extra = data.draw(st.binary(min_size=1, max_size=8))
    with pytest.raises(FrameError, match="trailing bytes"):
        _read(encoded + extra)


@settings(max_examples=100, deadline=None)
@given(header=st.binary(min_size=1, max_size=64), data=st.data())
def test_oversize_frames_are_refused_before_reading(header: bytes, data: st.DataObject) -> None:
    limit = data.draw(st.integers(0, len(header) - 1))
    with pytest.raises(FrameError, match=f"{len(header)} bytes exceeds the {limit}-byte limit"):
        _read(_frame(header, b""), max_header=limit)
    # A length prefix claiming far more than is present is refused without allocating it.
    forged = bytearray(_frame(header, b""))
    forged[7:11] = (2**32 - 1).to_bytes(4, "big")
    with pytest.raises(FrameError, match=r"exceeds|truncated"):
        _read(bytes(forged), max_header=2**32)


@settings(max_examples=200, deadline=None)
@given(blob=st.binary(max_size=40))
def test_arbitrary_bytes_fail_only_with_frame_errors(blob: bytes) -> None:
    try:
        _read(blob)
    except FrameError:
        return
    raise AssertionError("random bytes parsed as a frame")  # pragma: no cover


def test_magic_and_version_are_checked() -> None:
    encoded = _frame(b"", b"")
    with pytest.raises(FrameError, match="is empty"):
        _read(b"")
    with pytest.raises(FrameError, match="bad magic bytes"):
        _read(b"TGYY" + encoded[4:])
    with pytest.raises(FrameError, match="truncated in its magic"):
        _read(b"TG")
    with pytest.raises(FrameError, match="version 4 is not supported"):
        _read(encoded[:4] + b"\x04" + encoded[5:])


def test_writer_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(FrameError, match="does not fit"):
        FrameWriter(MAGIC, 256)
    with pytest.raises(FrameError, match="does not fit"):
        FrameWriter(MAGIC, 1).frame(b"x" * 256, length_size=1)


# --- schemas: StrictModel and validate_model ---------------------------------------------


class _Inner(StrictModel):
    count: int


class _Document(StrictModel):
    name: str
    ratio: float
    inner: _Inner


def test_strict_models_refuse_extra_missing_and_coerced_fields() -> None:
    good = {"name": "a", "ratio": 2, "inner": {"count": 3}}
    assert validate_model(_Document, good, what="test document").inner.count == 3
    cases = {
        "inner.count: Input should be a valid integer": {**good, "inner": {"count": True}},
        "name: Input should be a valid string": {**good, "name": 7},
        "ratio: Input should be a valid number": {**good, "ratio": "2"},
        "extra: Extra inputs are not permitted": {**good, "extra": 1},
        "inner: Field required": {"name": "a", "ratio": 1.0},
        "(document): Input should be a valid dictionary": ["not", "an", "object"],
    }
    for expected, document in cases.items():
        with pytest.raises(
            SchemaError, match=re.escape(f"test document does not match its schema: {expected}")
        ):
            validate_model(_Document, document, what="test document")


def test_schema_errors_do_not_repeat_the_offending_value() -> None:
    secret = "s3cr3t-value-that-must-not-leak"
    with pytest.raises(SchemaError) as caught:
        validate_model(
            _Document, {"name": secret, "ratio": secret, "inner": {"count": secret}}, what="doc"
        )
    assert secret not in str(caught.value)
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__


class _Stamped(StrictModel):
    digest: Sha256Hex
    at: IsoTimestamp


def test_digest_and_timestamp_fields() -> None:
    good = validate_model(
        _Stamped, {"digest": "a" * 64, "at": "2026-01-31T12:00:00+01:00"}, what="d"
    )
    assert good.at.utcoffset() is not None
    assert good.at.isoformat() == "2026-01-31T12:00:00+01:00"
    refused: dict[str, dict[str, object]] = {
        "digest: String should match pattern": {"digest": "A" * 64},
        "digest: String should match": {"digest": "a" * 64 + "\n"},
        "at: Value error, must carry a UTC offset": {"at": "2026-01-31T12:00:00"},
        "at: Value error, is not an ISO 8601 time": {"at": "31/01/2026"},
        "at: Value error, must be an ISO 8601 time string": {"at": 1769860800},
    }
    for message, change in refused.items():
        document: dict[str, object] = {"digest": "a" * 64, "at": "2026-01-31T12:00:00+00:00"}
        document.update(change)
        with pytest.raises(SchemaError, match=re.escape(f"d does not match its schema: {message}")):
            validate_model(_Stamped, document, what="d")
