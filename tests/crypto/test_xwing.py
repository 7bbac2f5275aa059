"""X-Wing KEM: the CFRG draft's vectors, round trips and malformed inputs."""

from __future__ import annotations

import hashlib

import pytest

from tensorguard.crypto import (
    BackendUnavailableError,
    KEMError,
    KeyFormatError,
    XWingPrivateKey,
    XWingPublicKey,
    xwing_decapsulate,
    xwing_encapsulate,
    xwing_encapsulate_derand,
)
from tensorguard.crypto._backends import CryptographyBackend
from tests.crypto.conftest import KyberPyDerandomizedMLKEM


def test_vector_keys_derive_from_seed(xwing_vectors: list[dict[str, bytes]]) -> None:
    for vector in xwing_vectors:
        key = XWingPrivateKey.from_seed(vector["seed"])
        assert key.public_key().public_bytes() == vector["pk"]
        assert key.private_bytes() == vector["sk"]


def test_vector_ciphertexts_decapsulate(xwing_vectors: list[dict[str, bytes]]) -> None:
    for vector in xwing_vectors:
        key = XWingPrivateKey.from_seed(vector["sk"])
        assert xwing_decapsulate(key, vector["ct"]) == vector["ss"]


def test_vector_derandomised_encapsulation(
    xwing_vectors: list[dict[str, bytes]], reference_mlkem: KyberPyDerandomizedMLKEM
) -> None:
    for vector in xwing_vectors:
        public = XWingPublicKey.from_public_bytes(vector["pk"])
        shared_secret, ciphertext = xwing_encapsulate_derand(
            public, vector["eseed"], reference_mlkem
        )
        assert ciphertext == vector["ct"]
        assert shared_secret == vector["ss"]


def test_derandomised_encapsulation_needs_the_capability(
    xwing_vectors: list[dict[str, bytes]],
) -> None:
    public = XWingPublicKey.from_public_bytes(xwing_vectors[0]["pk"])
    with pytest.raises(BackendUnavailableError):
        xwing_encapsulate_derand(public, xwing_vectors[0]["eseed"], CryptographyBackend())  # type: ignore[arg-type]


def test_round_trip_and_fresh_randomness() -> None:
    key = XWingPrivateKey.generate()
    first_secret, first_ct = xwing_encapsulate(key.public_key())
    second_secret, second_ct = xwing_encapsulate(key.public_key())
    assert xwing_decapsulate(key, first_ct) == first_secret
    assert xwing_decapsulate(key, second_ct) == second_secret
    assert first_ct != second_ct
    assert first_secret != second_secret
    assert len(first_secret) == 32
    assert len(first_ct) == 1120


def test_other_key_derives_a_different_secret() -> None:
    key = XWingPrivateKey.generate()
    secret, ciphertext = xwing_encapsulate(key.public_key())
    assert xwing_decapsulate(XWingPrivateKey.generate(), ciphertext) != secret


def test_tampered_mlkem_part_changes_the_secret() -> None:
    key = XWingPrivateKey.generate()
    secret, ciphertext = xwing_encapsulate(key.public_key())
    tampered = bytes([ciphertext[0] ^ 1]) + ciphertext[1:]
    assert xwing_decapsulate(key, tampered) != secret


def test_tampered_x25519_part_changes_the_secret() -> None:
    key = XWingPrivateKey.generate()
    secret, ciphertext = xwing_encapsulate(key.public_key())
    tampered = ciphertext[:-1] + bytes([ciphertext[-1] ^ 0x10])
    assert xwing_decapsulate(key, tampered) != secret


def test_low_order_x25519_point_is_refused() -> None:
    key = XWingPrivateKey.generate()
    _, ciphertext = xwing_encapsulate(key.public_key())
    with pytest.raises(KEMError):
        xwing_decapsulate(key, ciphertext[:1088] + bytes(32))


@pytest.mark.parametrize("length", [0, 1119, 1121])
def test_wrong_ciphertext_length_is_refused(length: int) -> None:
    with pytest.raises(KEMError):
        xwing_decapsulate(XWingPrivateKey.generate(), bytes(length))


@pytest.mark.parametrize("length", [0, 31, 33])
def test_wrong_seed_length_is_refused(length: int) -> None:
    with pytest.raises(KeyFormatError):
        XWingPrivateKey.from_seed(bytes(length))


def test_public_key_identity_and_repr() -> None:
    key = XWingPrivateKey.generate()
    public = key.public_key()
    assert public.fingerprint() == hashlib.sha256(public.public_bytes()).hexdigest()
    assert XWingPublicKey.from_public_bytes(public.public_bytes()) == public
    assert key.private_bytes().hex() not in repr(key)
    with pytest.raises(KeyFormatError):
        XWingPublicKey.from_public_bytes(public.public_bytes()[:-1])
