"""The TGSP header's wire schema, field by field (#10 item 3: pydantic models).

Each case starts from a valid header built with the project's API, changes one field
of its JSON the way a forger or a buggy producer would, and checks that the schema
(``PackageHeader.from_json``, the step of :func:`decode_header` after canonical JSON
decoding) refuses it with the field named. The build side is held to the
same schema: values a reader would refuse cannot be constructed or encoded.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from tensorguard.crypto import CIPHERTEXT_SIZE, WRAPPED_KEY_SIZE, WrappedKey
from tensorguard.tgsp import (
    DEFAULT_LIMITS,
    FileEntry,
    HeaderSchemaError,
    HeaderTooLargeError,
    Limits,
    ModelIdentity,
    PackageHeader,
    ReleaseInfo,
    UnsafePathError,
)
from tensorguard.tgsp._header import PayloadInfo, decode_header, encode_header_json

CHUNK = 1024


def _header() -> PackageHeader:
    files = (FileEntry("a.bin", 3000, "a" * 64), FileEntry("b/c.txt", 10, "b" * 64))
    release = ReleaseInfo(
        channel="stable",
        version=4,
        created_at=1_000,
        expires_at=2_000,
        model=ModelIdentity("tiny-lora", "c" * 64),
        base_model=ModelIdentity("tiny", "d" * 64),
        round_id="round-7",
        gate_decision_digest="e" * 64,
        annotations={"team/owner": "ml-platform"},
    )
    recipient = WrappedKey("f" * 64, bytes(CIPHERTEXT_SIZE), bytes(WRAPPED_KEY_SIZE))
    # 3010 bytes in 1 KiB chunks: 3 chunks, one segment of 4 chunks
    payload = PayloadInfo(CHUNK, 3, 3010 + 3 * 16, 4, ("1" * 64,))
    return PackageHeader("2" * 32, "3" * 64, release, files, (recipient,), payload)


def _document() -> dict[str, Any]:
    return copy.deepcopy(_header().to_json())


def test_a_valid_header_round_trips_through_the_schema() -> None:
    header = _header()
    assert decode_header(header.encode(DEFAULT_LIMITS), DEFAULT_LIMITS) == header


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        if last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value

    return change


def _drop(path: str) -> Callable[[dict[str, Any]], None]:
    *parents, last = path.split(".")

    def change(document: dict[str, Any]) -> None:
        target: Any = document
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        del target[last]

    return change


# (what is changed, the change, the field path the refusal must name, words it must use)
SCHEMA_CASES: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    ("format", _set("format", "TGSQ"), "format", "must be 'TGSP'"),
    ("version", _set("format_version", 2), "format_version", "must be 3"),
    ("suite", _set("suite", "classical-only"), "suite", "must be"),
    ("package id upper case", _set("package_id", "2" * 31 + "A"), "package_id", "pattern"),
    ("package id length", _set("package_id", "2" * 64), "package_id", "pattern"),
    ("producer key", _set("producer.key_id", "3" * 63), "producer.key_id", "pattern"),
    ("signature algorithm", _set("producer.algorithm", "ed25519"), "producer.algorithm",
     "must be"),
    ("channel", _set("release.channel", "Stable"), "release.channel", "pattern"),
    ("version as text", _set("release.version", "4"), "release.version",
     "must be an integer"),
    ("negative version", _set("release.version", -1), "release.version",
     "greater than or equal to 0"),
    ("version above 2^53", _set("release.version", 2**53), "release.version",
     "less than or equal to"),
    ("expiry before creation", _set("release.expires_at", 1_000), "release",
     "expires_at must be later than created_at"),
    ("model digest", _set("release.model.sha256", "C" * 64), "release.model.sha256",
     "pattern"),
    ("empty model name", _set("release.model.name", ""), "release.model.name", "at least 1"),
    ("long model name", _set("release.model.name", "x" * 257), "release.model.name",
     "at most 256"),
    ("control character", _set("release.model.name", "tiny\u0007"), "release.model.name",
     "control or format characters"),
    ("bidi override", _set("release.round", "r\u202e7"), "release.round",
     "control or format characters"),
    ("annotation key", _set("release.annotations", {"Team": "x"}),
     "release.annotations.Team (key)", "pattern"),
    ("annotation value", _set("release.annotations", {"team": 7}), "release.annotations.team",
     "must be a string"),
    ("gate digest", _set("release.gate_decision_sha256", "e" * 65),
     "release.gate_decision_sha256", "pattern"),
    ("release is a list", _set("release", []), "release", "must be an object"),
    ("unknown release field", _set("release.signed_by", "me"), "release.signed_by",
     "unknown field"),
    ("missing model", _drop("release.model"), "release.model", "is missing"),
    ("file digest", _set("manifest.files.0.sha256", "a" * 63), "manifest.files[0].sha256",
     "pattern"),
    ("file size", _set("manifest.files.1.size", -10), "manifest.files[1].size",
     "greater than or equal to 0"),
    ("files is an object", _set("manifest.files", {}), "manifest.files", "must be an array"),
    ("kem", _set("recipients.0.kem", "ML-KEM-768"), "recipients[0].kem", "must be"),
    ("recipient id", _set("recipients.0.recipient_id", "F" * 64), "recipients[0].recipient_id",
     "pattern"),
    ("kem ciphertext length", _set("recipients.0.kem_ciphertext", "AAAA"),
     "recipients[0].kem_ciphertext", f"exactly {CIPHERTEXT_SIZE} bytes"),
    ("wrapped key not base64", _set("recipients.0.wrapped_key", "!" * 64),
     "recipients[0].wrapped_key", "not valid base64"),
    ("aead", _set("payload.aead", "ChaCha20-Poly1305"), "payload.aead", "must be"),
    ("chunk too small", _set("payload.chunk_size", 512), "payload.chunk_size",
     "greater than or equal to"),
    ("no chunks", _set("payload.chunk_count", 0), "payload.chunk_count",
     "greater than or equal to 1"),
    ("zero segment", _set("payload.segment_chunks", 0), "payload.segment_chunks",
     "greater than or equal to 1"),
    ("segment digest", _set("payload.segment_sha256", ["1" * 64 + "\n"]),
     "payload.segment_sha256[0]", "pattern"),
    ("file count", _set("manifest.file_count", 3), "manifest.file_count", "must be 2"),
    ("total size", _set("manifest.total_size", 3011), "manifest.total_size", "must be 3010"),
    ("unsorted files", lambda d: d["manifest"]["files"].reverse(), "manifest.files",
     "sorted by path"),
    ("payload length", _set("payload.length", 3059), "payload.length",
     "does not match the manifest sizes"),
    ("digest count", _set("payload.segment_sha256", ["1" * 64] * 2), "payload.segment_sha256",
     "lists 2 digests; the geometry needs 1"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [case[1:] for case in SCHEMA_CASES],
    ids=[case[0] for case in SCHEMA_CASES],
)
def test_each_field_rule_refuses_with_the_field_named(
    change: Callable[[dict[str, Any]], None], field: str, words: str
) -> None:
    document = _document()
    change(document)
    with pytest.raises(HeaderSchemaError) as refused:
        PackageHeader.from_json(document, DEFAULT_LIMITS)
    message = str(refused.value)
    assert f"header field {field}: " in message, message
    assert words in message, message


def test_a_boolean_is_not_an_integer_anywhere() -> None:
    # JSON booleans are refused by the canonical decoder before the schema; a Python
    # True reaching the schema directly (an API caller) is refused by strict typing.
    document = _document()
    document["release"]["version"] = True
    with pytest.raises(HeaderSchemaError, match=r"release\.version: must be an integer"):
        PackageHeader.from_json(document, DEFAULT_LIMITS)


def test_an_unsafe_path_keeps_its_own_error() -> None:
    document = _document()
    document["manifest"]["files"][0]["path"] = "../escape.bin"
    with pytest.raises(UnsafePathError, match="unsafe path"):
        decode_header(encode_header_json(document), DEFAULT_LIMITS)


def test_several_problems_are_named_together() -> None:
    document = _document()
    document["package_id"] = "x"
    document["release"]["channel"] = "UPPER"
    with pytest.raises(HeaderSchemaError) as refused:
        decode_header(encode_header_json(document), DEFAULT_LIMITS)
    assert "header field package_id" in str(refused.value)
    assert "header field release.channel" in str(refused.value)


def test_limits_apply_before_the_items_are_validated() -> None:
    document = _document()
    # invalid items past the limit: the count is what is reported
    document["manifest"]["files"] = [{"junk": 1}] * 3
    with pytest.raises(HeaderTooLargeError, match="3 files exceed the limit of 2"):
        PackageHeader.from_json(document, dataclasses.replace(DEFAULT_LIMITS, max_files=2))
    document = _document()
    document["recipients"] = [{}] * 3
    with pytest.raises(HeaderTooLargeError, match="3 recipients exceed the limit of 2"):
        PackageHeader.from_json(document, Limits(max_recipients=2))
    document = _document()
    document["payload"]["segment_sha256"] = ["?"] * 3
    with pytest.raises(HeaderTooLargeError, match="3 payload segments exceed the limit of 2"):
        PackageHeader.from_json(document, Limits(max_segments=2))
    document = _document()
    document["release"]["annotations"] = {f"k{i}": "v" for i in range(3)}
    with pytest.raises(HeaderSchemaError, match=r"release\.annotations: must be an object of <= 2"):
        PackageHeader.from_json(document, Limits(max_annotations=2))


def test_no_recipient_is_refused() -> None:
    document = _document()
    document["recipients"] = []
    with pytest.raises(HeaderTooLargeError, match=r"0 recipients; 1\.\.256 allowed"):
        decode_header(encode_header_json(document), DEFAULT_LIMITS)


def test_the_build_side_is_held_to_the_same_schema() -> None:
    with pytest.raises(HeaderSchemaError, match=r"model\.sha256"):
        ModelIdentity("tiny", "C" * 64)
    with pytest.raises(HeaderSchemaError, match=r"release\.channel"):
        dataclasses.replace(_header().release, channel="Stable")
    with pytest.raises(HeaderSchemaError, match="expires_at must be later than created_at"):
        dataclasses.replace(_header().release, expires_at=1_000)
    bad_file = dataclasses.replace(_header(), files=(FileEntry("a.bin", 3010, "A" * 64),))
    with pytest.raises(HeaderSchemaError, match=r"manifest\.files\[0\]\.sha256"):
        bad_file.encode(DEFAULT_LIMITS)
    bad_key = dataclasses.replace(
        _header(), recipients=(WrappedKey("f" * 64, b"short", bytes(WRAPPED_KEY_SIZE)),)
    )
    with pytest.raises(HeaderSchemaError, match=r"recipients\[0\]\.kem_ciphertext"):
        bad_key.encode(DEFAULT_LIMITS)


def _two_recipients(document: dict[str, Any]) -> None:
    second = dict(document["recipients"][0], recipient_id="0" * 64)
    document["recipients"].insert(0, second)


def _unsorted_recipients(document: dict[str, Any]) -> None:
    _two_recipients(document)
    document["recipients"].reverse()


def _total_over_2_52(document: dict[str, Any]) -> None:
    _set("manifest.files.0.size", 2**51)(document)
    _set("manifest.files.1.size", 2**51)(document)
    _set("manifest.total_size", 2**52)(document)


CROSS_FIELD_CASES: list[tuple[str, Callable[[dict[str, Any]], None], Limits, str]] = [
    ("unsorted recipients", _unsorted_recipients,
     DEFAULT_LIMITS, "header field recipients: must be unique and sorted by recipient_id"),
    ("duplicate recipients", lambda d: d["recipients"].append(dict(d["recipients"][0])),
     DEFAULT_LIMITS, "header field recipients: must be unique and sorted by recipient_id"),
    ("chunk count", _set("payload.chunk_count", 4), DEFAULT_LIMITS,
     "header field payload.chunk_count: does not match the manifest sizes"),
    ("total over 2^52", _total_over_2_52, DEFAULT_LIMITS,
     "header field manifest.files: total size too large"),
    ("segments over the limit by geometry", _set("payload.segment_chunks", 2),
     Limits(max_segments=1),
     "2 payload segments exceed the limit of 1; use larger segments (segment_chunks) or "
     "raise the limit on both ends"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("change", "limits", "message"),
    [case[1:] for case in CROSS_FIELD_CASES],
    ids=[case[0] for case in CROSS_FIELD_CASES],
)
def test_each_cross_field_rule_refuses_in_full(
    change: Callable[[dict[str, Any]], None], limits: Limits, message: str
) -> None:
    document = _document()
    change(document)
    with pytest.raises((HeaderSchemaError, HeaderTooLargeError)) as refused:
        PackageHeader.from_json(document, limits)
    assert str(refused.value) == message


def test_the_recipient_limit_is_inclusive() -> None:
    document = _document()
    assert PackageHeader.from_json(document, Limits(max_recipients=1)) == _header()
    _two_recipients(document)
    with pytest.raises(HeaderTooLargeError, match="2 recipients exceed the limit of 1"):
        PackageHeader.from_json(document, Limits(max_recipients=1))


def test_a_total_of_exactly_half_the_safe_integer_range_is_accepted() -> None:
    from tensorguard.crypto import chunk_count, ciphertext_length

    total = (2**53 - 1) // 2
    chunk, per_segment = 16 * 1024 * 1024, 2**20
    chunks = chunk_count(total, chunk)
    document = _document()
    document["manifest"]["files"][0]["size"] = 2**51
    document["manifest"]["files"][1]["size"] = total - 2**51
    document["manifest"]["total_size"] = total
    document["payload"].update(
        chunk_size=chunk,
        chunk_count=chunks,
        length=ciphertext_length(total, chunk),
        segment_chunks=per_segment,
        segment_sha256=["1" * 64] * -(-chunks // per_segment),
    )
    header = PackageHeader.from_json(document, DEFAULT_LIMITS)
    assert header.total_size == total
