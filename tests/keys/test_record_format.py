"""The key-record format's parsing, word for word, and what a record store lists.

Each refusal names the file's problem as an operator reads it when a key does not load;
a parsed header keeps every field it was written with (#18 item 6: the mutation run on
keys/_record.py and keys/_sealed.py found these unchecked).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime

import pytest

from tensorguard.codec import FrameWriter, canonical_json
from tensorguard.keys import FileKeyProvider, KeyPurpose
from tensorguard.keys._errors import (
    InvalidKeyNameError,
    KeyExistsError,
    KeyIntegrityError,
    KeyRecordFormatError,
)
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


def _document(**changes: object) -> bytes:
    header = _header()
    document = json.loads(header.to_json_bytes())
    document.update(changes)
    return _record(canonical_json(document))


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"purpose": 5}, "purpose: Value error, must be a key purpose string"),
        (
            {"purpose": "bogus"},
            "purpose: Value error, is not a known key purpose (composite-signing, xwing-kem, "
            "ckks-secret-context, generic-secret)",
        ),
        ({"nonce": 5}, "nonce: Value error, must be base64 text"),
        ({"nonce": "AAAA"}, "nonce: Value error, must be 12 bytes, not 3"),
        ({"nonce": "!!"}, "nonce: Value error, is not valid base64"),
    ],
)
def test_a_malformed_header_field_is_named_with_its_rule(
    changes: dict[str, object], problem: str
) -> None:
    with pytest.raises(KeyRecordFormatError) as raised:
        parse_record(_document(**changes))
    assert str(raised.value) == (
        f"key record header does not match its schema: {problem}; the file is corrupt"
    )


def test_a_record_without_a_whole_tag_is_truncated() -> None:
    with pytest.raises(KeyRecordFormatError) as raised:
        parse_record(_header().record_prefix() + bytes(15))
    assert str(raised.value) == "key record is truncated (ciphertext missing)"


def test_a_header_is_validated_and_size_limited_before_it_is_written() -> None:
    bad = dataclasses.replace(_header(), name="Bad")
    with pytest.raises(KeyRecordFormatError) as raised:
        bad.to_json_bytes()
    assert str(raised.value) == (
        "key record header cannot be encoded: key record header does not match its schema: "
        "name: String should match pattern '^[a-z0-9][a-z0-9_.-]{0,62}$'"
    )
    base_length = len(dataclasses.replace(_header(), attributes={"x": ""}).to_json_bytes())
    fits = dataclasses.replace(_header(), attributes={"x": "a" * (16384 - base_length)})
    assert len(fits.to_json_bytes()) == 16384
    assert parse_record(fits.record_prefix() + bytes(16)).header == fits
    over = dataclasses.replace(_header(), attributes={"x": "a" * (16385 - base_length)})
    with pytest.raises(KeyRecordFormatError) as raised:
        over.record_prefix()
    assert str(raised.value) == "key record header is 16385 bytes, above the 16384 limit"


def test_the_store_binds_attributes_and_says_which_file_failed(
    file_provider: FileKeyProvider,
) -> None:
    store = file_provider.records
    store.seal("aa", KeyPurpose.GENERIC, b"secret", replace=False, attributes={"k": "v"})
    assert store.open_record("aa", KeyPurpose.GENERIC).header.attributes == {"k": "v"}
    with pytest.raises(KeyExistsError) as exists:
        store.seal("aa", KeyPurpose.GENERIC, b"other", replace=False)
    assert str(exists.value).startswith("key 'aa' (generic-secret) already exists in ")

    path = store.directory.record_path("aa", KeyPurpose.GENERIC)
    moved = store.directory.record_path("bb", KeyPurpose.GENERIC)
    moved.write_bytes(path.read_bytes())
    moved.chmod(0o600)
    with pytest.raises(KeyIntegrityError) as raised:
        store.open("bb", KeyPurpose.GENERIC)
    assert str(raised.value) == (
        f"key file {moved} holds key 'aa' (generic-secret), not 'bb' (generic-secret): it "
        "was renamed or copied; restore the right file"
    )

    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(KeyIntegrityError) as raised:
        store.open("aa", KeyPurpose.GENERIC)
    assert str(raised.value) == (
        f"key file {path} failed authentication: its header or ciphertext was altered or "
        "truncated; restore it from backup"
    )


def test_a_record_of_another_provider_names_the_provider_to_select(
    file_provider: FileKeyProvider,
) -> None:
    store = file_provider.records
    header = dataclasses.replace(_header(), name="cc", provider="pkcs11")
    path = store.directory.write(
        "cc", KeyPurpose.GENERIC, header.record_prefix() + bytes(32), replace=False
    )
    with pytest.raises(KeyRecordFormatError) as raised:
        store.open("cc", KeyPurpose.GENERIC)
    assert str(raised.value) == (
        f"key file {path} was sealed by the 'pkcs11' provider, not 'file'; select that "
        "provider with TG_KEY_PROVIDER"
    )
