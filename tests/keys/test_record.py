"""The sealed key record's header: its strict schema and its unchanged bytes on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from tensorguard.codec import FrameWriter, canonical_json, parse_json_object
from tensorguard.keys import FileKeyProvider, KeyPurpose, KeyRecordFormatError
from tensorguard.keys._pkcs11_provider import _PKCS11Seal
from tensorguard.keys._record import (
    RECORD_MAGIC,
    RECORD_VERSION,
    TAG_BYTES,
    RecordHeader,
    parse_record,
    parse_seal,
)

# SHA-256 of RecordHeader.to_json_bytes() and of record_prefix() for _header() below,
# computed with the hand-written validator/encoder that preceded the pydantic schema
# (commit d941935): records on disk must keep opening, and new ones must be the same bytes.
GOLDEN_HEADER_SHA256 = "44a3cf5e34d2fcfe216c73060e899fe579bd14025fc32b057c81920e19448ceb"
GOLDEN_PREFIX_SHA256 = "8d17285c064790db3368bdb59aff16d7a66c4b7c49c5c354064f150eabfc78ca"


def _header(**changes: Any) -> RecordHeader:
    fields: dict[str, Any] = {
        "name": "release-signer",
        "purpose": KeyPurpose.SIGNING,
        "provider": "file",
        "nonce": bytes(range(12)),
        "seal": {
            "kdf": "scrypt+hkdf-sha256",
            "scrypt_n": 32768,
            "scrypt_r": 8,
            "scrypt_p": 1,
            "scrypt_salt": "AAAAAAAAAAAAAAAAAAAAAA==",
            "key_check": "AQID",
            "record_salt": "BAUG",
        },
        "attributes": {"ed25519_public": "q83v"},
        "created_at": datetime(2026, 12, 3, 8, 42, 21, tzinfo=UTC),
    }
    fields.update(changes)
    return RecordHeader(**fields)


def _record(header_bytes: bytes) -> bytes:
    framed = FrameWriter(RECORD_MAGIC, RECORD_VERSION).frame(header_bytes, length_size=4)
    return framed.raw(bytes(TAG_BYTES + 5)).to_bytes()


def test_header_bytes_are_unchanged_and_round_trip() -> None:
    header = _header()
    encoded = header.to_json_bytes()
    assert hashlib.sha256(encoded).hexdigest() == GOLDEN_HEADER_SHA256
    prefix = header.record_prefix()
    assert hashlib.sha256(prefix).hexdigest() == GOLDEN_PREFIX_SHA256
    parsed = parse_record(_record(encoded))
    assert parsed.header == header
    assert parsed.associated_data == prefix
    assert parsed.header.record_prefix() == prefix


def test_a_record_written_by_the_provider_re_serialises_to_its_own_bytes(
    file_provider: FileKeyProvider,
) -> None:
    file_provider.store_secret("site-a", KeyPurpose.GENERIC, b"secret bytes")
    path = file_provider.records.directory.record_path("site-a", KeyPurpose.GENERIC)
    parsed = parse_record(path.read_bytes())
    assert parsed.header.record_prefix() == parsed.associated_data
    assert parsed.header.name == "site-a"
    assert parsed.header.purpose is KeyPurpose.GENERIC
    assert parsed.header.created_at.tzinfo is not None
    assert file_provider.load_secret("site-a", KeyPurpose.GENERIC) == b"secret bytes"


def _document() -> dict[str, Any]:
    return parse_json_object(_header().to_json_bytes(), what="test record")


def _with(**changes: Any) -> dict[str, Any]:
    return {**_document(), **changes}


def _without(field: str) -> dict[str, Any]:
    document = _document()
    del document[field]
    return document


def _seal(**changes: Any) -> dict[str, Any]:
    document = _document()
    document["seal"] = {**document["seal"], **changes}
    return document


def _neither_text_nor_integer(field: str) -> str:
    """Pydantic reports a ``str | int`` value against each member of the union."""
    return (
        f"{field}.str: Input should be a valid string; {field}.int: Input should be a valid integer"
    )


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("extra field", _with(comment="x"), "comment: Extra inputs are not permitted"),
    ("missing field", _without("nonce"), "nonce: Field required"),
    ("missing attributes", _without("attributes"), "attributes: Field required"),
    ("wrong type", _with(provider=1), "provider: Input should be a valid string"),
    (
        "bool for int",
        _seal(scrypt_n=True),
        _neither_text_nor_integer("seal.scrypt_n"),
    ),
    (
        "float for int",
        _seal(scrypt_r=8.5),
        _neither_text_nor_integer("seal.scrypt_r"),
    ),
    ("nested object", _seal(extra={"a": 1}), "seal.extra.str: Input should be a valid string"),
    (
        "attribute not text",
        _with(attributes={"ed25519_public": 3}),
        "attributes.ed25519_public: Input should be a valid string",
    ),
    ("seal not object", _with(seal=[]), "seal: Input should be a valid dictionary"),
    ("unknown purpose", _with(purpose="root"), "purpose: Value error, is not a known key purpose"),
    ("invalid name", _with(name="../etc"), "name: String should match pattern"),
    ("name too long", _with(name="a" * 64), "name: String should match pattern"),
    ("provider empty", _with(provider=""), "provider: String should match pattern"),
    (
        "naive time",
        _with(created_at="2026-12-03T08:42:21"),
        "created_at: Value error, must carry a UTC offset",
    ),
    ("junk time", _with(created_at="yesterday"), "created_at: Value error, is not an ISO 8601"),
    ("time not text", _with(created_at=0), "created_at: Value error, must be an ISO 8601"),
    (
        "nonce short",
        _with(nonce="AAECAwQFBgcICQo="),
        "nonce: Value error, must be 12 bytes, not 11",
    ),
    (
        "nonce long",
        _with(nonce="AAECAwQFBgcICQoLDA=="),
        "nonce: Value error, must be 12 bytes, not 13",
    ),
    (
        "nonce not base64",
        _with(nonce="AAECAwQF*gcICQoL"),
        "nonce: Value error, is not valid base64",
    ),
]


@pytest.mark.parametrize(
    ("document", "message"), [(d, m) for _, d, m in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_headers_are_refused_naming_the_field(
    document: dict[str, Any], message: str
) -> None:
    expected = f"key record header does not match its schema: {message}"
    with pytest.raises(KeyRecordFormatError, match=re.escape(expected)) as caught:
        parse_record(_record(canonical_json(document)))
    assert str(caught.value).endswith("; the file is corrupt")


def test_refusals_do_not_repeat_sealing_material() -> None:
    planted = "d3JhcHBlZC1rZXktbWF0ZXJpYWw="
    document = _seal(wrapped_key=[planted])
    with pytest.raises(KeyRecordFormatError, match=r"seal\.wrapped_key") as caught:
        parse_record(_record(canonical_json(document)))
    assert planted not in str(caught.value)
    assert caught.value.__cause__ is None


def test_duplicate_keys_are_still_refused() -> None:
    encoded = _header().to_json_bytes()
    duplicated = encoded.replace(b'"provider":"file"', b'"provider":"file","provider":"pkcs11"')
    with pytest.raises(KeyRecordFormatError, match="repeats the object key 'provider'"):
        parse_record(_record(duplicated))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"created_at": datetime(2026, 12, 3, 8, 42, 21)}, "created_at: Value error, must carry"),
        ({"nonce": bytes(11)}, "nonce: Value error, must be 12 bytes, not 11"),
        (
            {"seal": {"scrypt_n": True}},
            _neither_text_nor_integer("seal.scrypt_n"),
        ),
        ({"name": "Release"}, "name: String should match pattern"),
    ],
)
def test_a_header_the_reader_would_refuse_cannot_be_written(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(KeyRecordFormatError, match=re.escape(message)):
        _header(**changes).record_prefix()


# --- the providers' sealing parameters (read before the record is authenticated) -------


def _reseal(provider: FileKeyProvider, **seal_changes: Any) -> None:
    """Rewrite the stored record of key 'blob' with its seal changed (or a field removed
    when the change is ``None``), keeping its ciphertext."""
    path = provider.records.directory.record_path("blob", KeyPurpose.GENERIC)
    parsed = parse_record(path.read_bytes())
    seal = {**parsed.header.seal, **seal_changes}
    seal = {key: value for key, value in seal.items() if value is not None}
    header = dataclasses.replace(parsed.header, seal=seal)
    path.write_bytes(header.record_prefix() + parsed.ciphertext)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scrypt_n": "16384"}, "scrypt_n: Input should be a valid integer"),
        ({"scrypt_p": 0}, "scrypt_p: Input should be greater than or equal to 1"),
        ({"kdf": "pbkdf2"}, "kdf: Input should be 'scrypt+hkdf-sha256'"),
        ({"record_salt": None}, "record_salt: Field required"),
        ({"scrypt_salt": "not base64!"}, "scrypt_salt: Value error, is not valid base64"),
        ({"key_check": 5}, "key_check: Value error, must be base64 text"),
        ({"wrapped_key": "AAAA"}, "wrapped_key: Extra inputs are not permitted"),
    ],
)
def test_file_seals_are_checked_field_by_field(
    file_provider: FileKeyProvider, changes: dict[str, Any], message: str
) -> None:
    file_provider.store_secret("blob", KeyPurpose.GENERIC, b"secret bytes")
    _reseal(file_provider, **changes)
    expected = (
        "key record 'blob' sealing parameters for the file provider does not match its "
        f"schema: {message}"
    )
    with pytest.raises(KeyRecordFormatError, match=re.escape(expected)) as caught:
        file_provider.load_secret("blob", KeyPurpose.GENERIC)
    assert "sealed by another provider" in str(caught.value)


def _pkcs11_header(**seal_changes: Any) -> RecordHeader:
    seal = {
        "wrap_mechanism": "CKM_AES_GCM",
        "token": "tg-keys-primary",
        "wrapping_key": "tensorguard-wrap",
        "wrap_nonce": "AAECAwQFBgcICQoL",
        "wrapped_key": "q83v" * 8,
        "wrap_iv_source": "host",
        **seal_changes,
    }
    return _header(provider="pkcs11", seal={k: v for k, v in seal.items() if v is not None})


def test_pkcs11_seals_are_checked_field_by_field() -> None:
    seal = parse_seal(_PKCS11Seal, _pkcs11_header(), "pkcs11")
    assert seal.wrap_nonce == bytes(range(12))
    assert seal.wrap_iv_source == "host"
    older = parse_seal(_PKCS11Seal, _pkcs11_header(wrap_iv_source=None), "pkcs11")
    assert older.wrap_iv_source is None  # records sealed before the IV source was kept
    cases: dict[str, dict[str, Any]] = {
        "wrap_mechanism: Input should be 'CKM_AES_GCM'": {"wrap_mechanism": "CKM_AES_KEY_WRAP"},
        "wrap_iv_source: Input should be 'token' or 'host'": {"wrap_iv_source": "both"},
        "wrap_nonce: Value error, is not valid base64": {"wrap_nonce": "%%"},
        "token: Input should be a valid string": {"token": 7},
        "wrapped_key: Field required": {"wrapped_key": None},
        "kdf: Extra inputs are not permitted": {"kdf": "scrypt+hkdf-sha256"},
    }
    for message, changes in cases.items():
        expected = (
            "key record 'release-signer' sealing parameters for the pkcs11 provider does not "
            f"match its schema: {message}"
        )
        with pytest.raises(KeyRecordFormatError, match=re.escape(expected)):
            parse_seal(_PKCS11Seal, _pkcs11_header(**changes), "pkcs11")
