"""The KDF and the key wrap, rebuilt from their specification with independent code.

HKDF-SHA256 is checked against RFC 5869's first test case and its length limits; the
X-Wing key wrap is opened by hand (decapsulate, HKDF with the documented salt and info,
AES-256-GCM with a zero nonce and the documented AAD), so a change to any field of the
construction, which would break every package already published, fails here (#18 item 6:
mutation run on crypto/_kdf.py and crypto/_key_wrap.py). Refusals are pinned word for
word: an operator reads them when a package does not open.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from kyber_py.ml_kem import ML_KEM_768

from tensorguard.crypto import (
    AEADDecryptionError,
    CryptoError,
    KeyFormatError,
    XWingPrivateKey,
    unwrap_key,
    wrap_key,
)
from tensorguard.crypto._kdf import MAX_HKDF_SHA256_LENGTH, encode_info, hkdf_sha256
from tests.crypto.kyber_py_backend import KyberPyEncapsulation

# RFC 5869, appendix A.1 (basic test case with SHA-256)
RFC5869_IKM = bytes([0x0B] * 22)
RFC5869_SALT = bytes(range(0x0D))
RFC5869_INFO = bytes(range(0xF0, 0xFA))
RFC5869_OKM = bytes.fromhex(
    "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
)
DATA_KEY = bytes(range(32))
BINDING = bytes.fromhex("00112233445566778899aabbccddeeff")


def _fields(*fields: bytes) -> bytes:
    out = b""
    for field in fields:
        out += len(field).to_bytes(4, "big") + field
    return out


def test_encode_info_prefixes_each_field_with_its_big_endian_length() -> None:
    assert encode_info() == b""
    assert encode_info(b"") == b"\x00\x00\x00\x00"
    assert encode_info(b"ab", b"c") == b"\x00\x00\x00\x02ab\x00\x00\x00\x01c"
    assert encode_info(b"x" * 300) == b"\x00\x00\x01\x2c" + b"x" * 300
    assert encode_info(b"ab", b"c") != encode_info(b"a", b"bc")


def test_hkdf_matches_rfc5869_test_case_1() -> None:
    assert hkdf_sha256(RFC5869_IKM, salt=RFC5869_SALT, info=RFC5869_INFO, length=42) == (
        RFC5869_OKM
    )
    # the default length is 32 bytes, a prefix of the longer output
    assert hkdf_sha256(RFC5869_IKM, salt=RFC5869_SALT, info=RFC5869_INFO) == RFC5869_OKM[:32]


@pytest.mark.parametrize("length", [1, MAX_HKDF_SHA256_LENGTH])
def test_hkdf_accepts_every_length_rfc5869_allows(length: int) -> None:
    assert MAX_HKDF_SHA256_LENGTH == 8160
    okm = hkdf_sha256(b"ikm", salt=b"salt", info=b"info", length=length)
    assert len(okm) == length


@pytest.mark.parametrize("length", [0, -1, MAX_HKDF_SHA256_LENGTH + 1])
def test_hkdf_refuses_lengths_outside_the_rfc_limit(length: int) -> None:
    with pytest.raises(CryptoError) as raised:
        hkdf_sha256(b"ikm", salt=b"salt", info=b"info", length=length)
    assert str(raised.value) == f"HKDF-SHA256 output length must be 1..8160, got {length}"


@pytest.fixture(scope="module")
def alice() -> XWingPrivateKey:
    return XWingPrivateKey.generate()


@pytest.fixture(scope="module")
def bob() -> XWingPrivateKey:
    return XWingPrivateKey.generate()


def test_a_wrapped_key_opens_with_the_documented_construction(alice: XWingPrivateKey) -> None:
    block = wrap_key(DATA_KEY, alice.public_key(), binding=BINDING)
    recipient_id = alice.public_key().fingerprint()
    assert block.recipient_id == recipient_id
    assert len(block.wrapped_key) == 48

    shared_secret = alice.decapsulate(block.kem_ciphertext)
    info = _fields(
        b"TG-XWING-KEYWRAP-v1",
        bytes.fromhex(recipient_id),
        hashlib.sha256(block.kem_ciphertext).digest(),
    )
    kek = HKDF(algorithm=hashes.SHA256(), length=32, salt=BINDING, info=info).derive(shared_secret)
    aad = _fields(b"TG-XWING-KEYWRAP-v1", BINDING, bytes.fromhex(recipient_id))
    assert AESGCM(kek).decrypt(bytes(12), block.wrapped_key, aad) == DATA_KEY

    # and a block built by hand the same way is opened by unwrap_key
    forged_ct = AESGCM(kek).encrypt(bytes(12), bytes(32), aad)
    rebuilt = dataclasses.replace(block, wrapped_key=forged_ct)
    assert unwrap_key(rebuilt, alice, binding=BINDING) == bytes(32)


def test_each_wrap_uses_a_fresh_encapsulation(alice: XWingPrivateKey) -> None:
    first = wrap_key(DATA_KEY, alice.public_key(), binding=BINDING)
    second = wrap_key(DATA_KEY, alice.public_key(), binding=BINDING)
    assert first.kem_ciphertext != second.kem_ciphertext
    assert first.wrapped_key != second.wrapped_key
    assert struct.unpack(">I", encode_info(first.kem_ciphertext)[:4])[0] == len(
        first.kem_ciphertext
    )


@pytest.mark.parametrize("size", [31, 33, 0])
def test_a_data_key_of_the_wrong_size_is_refused_with_its_size(
    alice: XWingPrivateKey, size: int
) -> None:
    with pytest.raises(KeyFormatError) as raised:
        wrap_key(bytes(size), alice.public_key(), binding=BINDING)
    assert str(raised.value) == f"data key must be 32 bytes, got {size}"


def test_unwrap_refusals_say_what_is_wrong(alice: XWingPrivateKey, bob: XWingPrivateKey) -> None:
    block = wrap_key(DATA_KEY, alice.public_key(), binding=BINDING)
    alice_id = alice.public_key().fingerprint()
    bob_id = bob.public_key().fingerprint()

    with pytest.raises(AEADDecryptionError) as raised:
        unwrap_key(block, bob, binding=BINDING)
    assert str(raised.value) == (
        f"key block is addressed to recipient {alice_id[:16]}, not to this key ({bob_id[:16]})"
    )

    for wrong_size in (block.wrapped_key[:-1], block.wrapped_key + b"\x00"):
        with pytest.raises(AEADDecryptionError) as raised:
            unwrap_key(dataclasses.replace(block, wrapped_key=wrong_size), alice, binding=BINDING)
        assert str(raised.value) == "wrapped key must be 48 bytes"

    with pytest.raises(AEADDecryptionError) as raised:
        unwrap_key(block, alice, binding=BINDING[:-1])
    assert str(raised.value) == (
        "key block does not unwrap: it was altered, swapped with another recipient's "
        "block, or copied from another package"
    )


def test_the_repr_names_only_the_recipient(alice: XWingPrivateKey) -> None:
    block = wrap_key(DATA_KEY, alice.public_key(), binding=BINDING)
    assert repr(block) == f"WrappedKey(recipient_id={block.recipient_id!r})"


def test_wrap_key_encapsulates_with_the_backend_it_is_given(alice: XWingPrivateKey) -> None:
    backend = KyberPyEncapsulation()
    block = wrap_key(DATA_KEY, alice.public_key(), binding=BINDING, backend=backend)
    _, expected = ML_KEM_768._encaps_internal(
        alice.public_key().mlkem_public_bytes, KyberPyEncapsulation.RANDOMNESS
    )
    assert block.kem_ciphertext[: len(expected)] == expected
    # and the block opens with the default backend: the two ML-KEMs interoperate
    assert unwrap_key(block, alice, binding=BINDING) == DATA_KEY
