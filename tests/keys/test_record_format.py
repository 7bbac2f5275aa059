"""The key-record format's parsing, word for word, and what a record store lists.

Each refusal names the file's problem as an operator reads it when a key does not load;
a parsed header keeps every field it was written with (#18 item 6: the mutation run on
keys/_record.py and keys/_sealed.py found these unchecked).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tensorguard.codec import FrameWriter
from tensorguard.keys import FileKeyProvider, KeyPurpose
from tensorguard.keys._errors import InvalidKeyNameError, KeyRecordFormatError
from tensorguard.keys._file_provider import _FileSeal
from tensorguard.keys._names import validate_key_name
from tensorguard.keys._record import (
    RecordHeader,
    b64decode,
    b64encode,
    parse_record,
    parse_seal,
)

CREATED = datetime(2026, 12, 3, 9, 30, tzinfo=UTC)


def _header(**seal: str | int) -> RecordHeader:
    return RecordHeader(
        name="k1",
        purpose=KeyPurpose.GENERIC,
        provider="file",
        nonce=bytes(range(12)),
        seal=seal or {"kdf": "scrypt+hkdf-sha256"},
        attributes={"public_key": "abc"},
        created_at=CREATED,
    )


def _record(header_json: bytes) -> bytes:
    return FrameWriter(b"TGKEYREC", 1).frame(header_json, length_size=4).to_bytes() + bytes(16)


def test_base64_fields_decode_strictly() -> None:
    assert b64encode(b"\x00\x01\x02") == "AAEC"
    assert b64decode("AAEC", "salt") == b"\x00\x01\x02"
    for bad in ("AAE", "AA!C", "AAEC\n", "ÄÄEC"):
        with pytest.raises(KeyRecordFormatError) as raised:
            b64decode(bad, "salt")
        assert str(raised.value) == (
            "key record field 'salt' is not valid base64; the file is corrupt"
        )


def test_a_parsed_header_keeps_every_field() -> None:
    header = _header()
    parsed = parse_record(header.record_prefix() + bytes(16))
    assert parsed.header == header
    assert parsed.header.attributes == {"public_key": "abc"}
    assert parsed.header.created_at == CREATED
    assert parsed.associated_data == header.record_prefix()
    assert parsed.ciphertext == bytes(16)


def test_each_damaged_record_is_refused_with_its_problem() -> None:
    with pytest.raises(KeyRecordFormatError) as raised:
        parse_record(b"TGKEYREX" + bytes(30))
    assert str(raised.value) == "not a TensorGuard key record (bad magic bytes)"

    oversized = b"TGKEYREC\x01" + (16385).to_bytes(4, "big") + b"{" * 16385 + bytes(16)
    with pytest.raises(KeyRecordFormatError) as raised:
        parse_record(oversized)
    assert str(raised.value) == (
        "TensorGuard key record header of 16385 bytes exceeds the 16384-byte limit"
    )

    with pytest.raises(KeyRecordFormatError) as raised:
        parse_record(_record(b"[1]"))
    assert str(raised.value) == (
        "key record header must be a JSON object at the top level, not an array; the file "
        "is corrupt"
    )

    with pytest.raises(KeyRecordFormatError) as raised:
        parse_record(_record(b'{"name":"k1"}'))
    assert str(raised.value) == (
        "key record header does not match its schema: purpose: Field required; provider: "
        "Field required; created_at: Field required; nonce: Field required; seal: Field "
        "required; attributes: Field required; the file is corrupt"
    )


def test_a_seal_from_another_provider_is_refused_naming_the_key() -> None:
    with pytest.raises(KeyRecordFormatError) as raised:
        parse_seal(_FileSeal, _header(kdf="pkcs11-wrap"), "file")
    message = str(raised.value)
    assert message.startswith(
        "key record 'k1' sealing parameters for the file provider does not match its "
        "schema: kdf: Input should be 'scrypt+hkdf-sha256'; "
    )
    assert message.endswith("; the file is corrupt or was sealed by another provider")


def test_exists_checks_the_name_and_list_describes_each_record(
    file_provider: FileKeyProvider,
) -> None:
    store = file_provider.records
    with pytest.raises(InvalidKeyNameError):
        store.exists("Not A Name", KeyPurpose.GENERIC)
    assert not store.exists("ckks", KeyPurpose.CKKS_SECRET)
    file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"x")
    assert store.exists("ckks", KeyPurpose.CKKS_SECRET)

    [info] = store.list()
    path = store.directory.record_path("ckks", KeyPurpose.CKKS_SECRET)
    header = parse_record(path.read_bytes()).header
    assert info.location == str(path)
    assert info.created_at == header.created_at
    assert info.created_at.tzinfo is not None
    assert (info.name, info.purpose, info.provider) == ("ckks", KeyPurpose.CKKS_SECRET, "file")


def test_key_names_are_1_to_63_lowercase_characters() -> None:
    assert validate_key_name("a") == "a"
    assert validate_key_name("0" + "x" * 62) == "0" + "x" * 62
    for bad in ("", "x" * 64, "Release", ".hidden", "-x", "a b", "a/b", "a\n", 7):
        with pytest.raises(InvalidKeyNameError) as raised:
            validate_key_name(bad)  # type: ignore[arg-type]
        assert str(raised.value) == (
            f"invalid key name {bad!r}: use 1-63 characters of a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit (e.g. 'release-signer')"
        )
