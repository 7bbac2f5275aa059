"""The site-update envelope header: its strict schema and its unchanged wire bytes."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tensorguard.codec import MAX_SAFE_INTEGER, canonical_json, parse_json_object
from tensorguard.crypto import CompositeSigningKey
from tensorguard.federation._envelope import (
    SIGNATURE_CONTEXT,
    EnvelopeHeader,
    SealedEnvelope,
    seal_envelope,
)
from tensorguard.federation._errors import EnvelopeError
from tensorguard.federation._layout import TensorLayout, TensorSpec

# SHA-256 of EnvelopeHeader.to_bytes() for _header() below (and with dp=None, weight=7),
# computed with the hand-written encoder that preceded the pydantic schema (commit
# d941935): the schema must not change a single signed byte.
GOLDEN_SHA256 = "f4f4d1acbaffa896b7c617ac785beda6e11a8aed5042fa3b0f8e87fd4475024c"
GOLDEN_NO_DP_SHA256 = "e7deb6f842d573eafafcdd07c4f97ce9c90c4c8d1dd2e5950b8060fee94078ce"
GOLDEN_PREFIX = (
    b'{"base_model_digest":"' + b"a" * 64 + b'","clip_norm":1,'
    b'"created_at":"2026-12-03T08:42:21.123456Z","dp":{"delta":0.00001,"epsilon_budget":8,'
)


def _header(**changes: Any) -> EnvelopeHeader:
    fields: dict[str, Any] = {
        "round_id": "round-0007",
        "site_id": "site-03",
        "base_model_digest": "a" * 64,
        "reference_digest": "b" * 64,
        "public_context_sha256": "c" * 64,
        "layout": TensorLayout(
            (TensorSpec("m.lora_A.weight", (4, 8)), TensorSpec("m.lora_B.weight", (8, 4)))
        ),
        "weight": 1234.5,
        "max_site_weight": 5000.0,
        "clip_norm": 1.0,
        "dp": {
            "round_id": "round-0007",
            "delta": 1e-5,
            "epsilon_round": 0.25,
            "epsilon_total": 1.5,
            "epsilon_budget": 8.0,
            "noise_multiplier": 1.1,
        },
        "payload_sha256": "d" * 64,
        "payload_bytes": 123456,
        "ciphertext_count": 3,
        "nonce": "0123456789abcdef0123456789abcdef",
        "created_at": datetime(2026, 12, 3, 8, 42, 21, 123456, tzinfo=UTC),
        "signer_fingerprint": "e" * 64,
    }
    fields.update(changes)
    return EnvelopeHeader(**fields)


def test_header_bytes_are_unchanged_and_round_trip() -> None:
    encoded = _header().to_bytes()
    assert encoded.startswith(GOLDEN_PREFIX)
    assert hashlib.sha256(encoded).hexdigest() == GOLDEN_SHA256
    no_dp = _header(dp=None, weight=7.0).to_bytes()
    assert hashlib.sha256(no_dp).hexdigest() == GOLDEN_NO_DP_SHA256
    assert _header(dp=None, weight=7).to_bytes() == no_dp  # an int weight is the same number
    for data in (encoded, no_dp):
        parsed = EnvelopeHeader.from_bytes(data)
        assert parsed.to_bytes() == data
    assert EnvelopeHeader.from_bytes(encoded) == _header()


def _document() -> dict[str, Any]:
    return parse_json_object(_header().to_bytes(), what="test header")


def _set(document: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    *parents, last = path.split(".")
    target = document
    for part in parents:
        target = target[part]
    target[last] = value
    return document


def _drop(document: dict[str, Any], path: str) -> dict[str, Any]:
    *parents, last = path.split(".")
    target = document
    for part in parents:
        target = target[part]
    del target[last]
    return document


MALFORMED = [
    ("extra field", lambda d: _set(d, "priority", 1), "priority: Extra inputs are not permitted"),
    (
        "extra nested field",
        lambda d: _set(d, "payload.offset", 0),
        "payload.offset: Extra inputs are not permitted",
    ),
    ("missing field", lambda d: _drop(d, "site_id"), "site_id: Field required"),
    ("missing nested", lambda d: _drop(d, "payload.sha256"), "payload.sha256: Field required"),
    ("wrong type", lambda d: _set(d, "weight", "1234.5"), "weight: Input should be a valid number"),
    ("bool for number", lambda d: _set(d, "clip_norm", True), "clip_norm: Input should be a valid"),
    (
        "bool for int",
        lambda d: _set(d, "payload.bytes", True),
        "payload.bytes: Input should be a valid integer",
    ),
    (
        "float for int",
        lambda d: _set(d, "payload.ciphertexts", 3.5),
        "payload.ciphertexts: Input should be a valid integer",
    ),
    (
        "negative count",
        lambda d: _set(d, "payload.ciphertexts", -1),
        "payload.ciphertexts: Input should be greater than or equal to 0",
    ),
    (
        "count beyond 2**53",
        lambda d: canonical_json(d).replace(b'"bytes":123456', b'"bytes":%d' % (2**53 + 1)),
        "payload.bytes: Input should be a valid integer",
    ),
    ("unknown format", lambda d: _set(d, "format", "v2"), "format: Input should be"),
    (
        "digest not hex",
        lambda d: _set(d, "payload.sha256", "D" * 64),
        "payload.sha256: String should match pattern",
    ),
    (
        "digest with a newline",
        lambda d: _set(d, "reference_digest", "b" * 64 + "\n"),
        "reference_digest: String should match pattern",
    ),
    ("short nonce", lambda d: _set(d, "nonce", "00"), "nonce: String should match pattern"),
    ("empty site", lambda d: _set(d, "site_id", ""), "site_id: String should have at least 1"),
    ("dp not object", lambda d: _set(d, "dp", [1]), "dp: Input should be"),
    (
        "time without microseconds",
        lambda d: _set(d, "created_at", "2026-12-03T08:42:21Z"),
        "created_at: Value error, must be an RFC 3339 UTC time",
    ),
    (
        "impossible date",
        lambda d: _set(d, "created_at", "2026-02-30T08:42:21.000000Z"),
        "created_at: Value error, is not a valid date and time",
    ),
    (
        "layout unsorted",
        lambda d: _set(d, "layout", list(reversed(d["layout"]))),
        "layout: Value error, tensor layout names must be unique and sorted",
    ),
    (
        "layout bool dim",
        lambda d: _set(d, "layout", [["m", [True]]]),
        "layout: Value error, layout entry",
    ),
    ("layout object", lambda d: _set(d, "layout", {}), "layout: Value error, must be an array"),
]


@pytest.mark.parametrize(
    ("change", "message"), [(c, m) for _, c, m in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_headers_are_refused_naming_the_field(change: Any, message: str) -> None:
    changed = change(_document())
    data = changed if isinstance(changed, bytes) else canonical_json(changed)
    with pytest.raises(
        EnvelopeError, match=re.escape(f"envelope header does not match its schema: {message}")
    ):
        EnvelopeHeader.from_bytes(data)


def test_a_header_the_reader_would_refuse_cannot_be_written() -> None:
    with pytest.raises(EnvelopeError, match=r"cannot be encoded: .*nonce: String should match"):
        _header(nonce="not hex").to_bytes()
    with pytest.raises(
        EnvelopeError, match=r"cannot be encoded: .*payload\.bytes: Input should be"
    ):
        _header(payload_bytes=-1).to_bytes()
    with pytest.raises(EnvelopeError, match=r"payload\.bytes: Input should be less than or equal"):
        _header(payload_bytes=MAX_SAFE_INTEGER + 1).to_bytes()


def test_a_validly_signed_header_with_an_extra_field_is_refused() -> None:
    """The signature covers the bytes, not their meaning: a keyed site (or a bug) that
    signs a header with a field this build does not know must not have it ignored."""
    key = CompositeSigningKey.generate()
    payload = b"ciphertexts"
    header = _header(
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_bytes=len(payload),
        signer_fingerprint=key.public_key().fingerprint(),
    )
    sealed = SealedEnvelope.from_bytes(seal_envelope(header, payload, key))
    assert sealed.verify(key.public_key()) == header
    widened = canonical_json({**parse_json_object(sealed.header_bytes, what="t"), "bonus": 2})
    forged = SealedEnvelope(widened, key.sign(widened, SIGNATURE_CONTEXT), payload)
    reparsed = SealedEnvelope.from_bytes(forged.to_bytes())
    with pytest.raises(EnvelopeError, match="bonus: Extra inputs are not permitted"):
        reparsed.verify(key.public_key())
