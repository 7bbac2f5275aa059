"""X-Wing: the refusals word for word, the caller's backend used throughout, key hashing.

Written for the mutants of ``tensorguard/crypto/_xwing.py`` that the vector and
round-trip tests in ``test_xwing.py`` let through (docs/SECURITY.md §4).
"""

from __future__ import annotations

import pytest

from tensorguard.crypto import (
    BackendUnavailableError,
    KEMError,
    KeyFormatError,
    XWingPrivateKey,
    XWingPublicKey,
    xwing_encapsulate,
    xwing_encapsulate_derand,
)
from tensorguard.crypto._backends import CryptographyBackend
from tests.crypto.conftest import KyberPyDerandomizedMLKEM

SEED = bytes(range(32))


class RecordingBackend(CryptographyBackend):
    """The real ``cryptography`` backend, noting which ML-KEM operations it served."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def mlkem768_public_key(self, seed: bytes) -> bytes:
        self.calls.append("public_key")
        return super().mlkem768_public_key(seed)

    def mlkem768_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        self.calls.append("encapsulate")
        return super().mlkem768_encapsulate(public_key)

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        self.calls.append("decapsulate")
        return super().mlkem768_decapsulate(seed, ciphertext)


def test_a_key_from_a_seed_uses_the_given_backend_for_every_operation() -> None:
    backend = RecordingBackend()
    key = XWingPrivateKey.from_seed(SEED, backend)
    assert backend.calls == ["public_key"]
    secret, ciphertext = xwing_encapsulate(key.public_key(), backend)
    assert key.decapsulate(ciphertext) == secret
    assert backend.calls == ["public_key", "encapsulate", "decapsulate"]


def test_a_generated_key_uses_the_given_backend() -> None:
    backend = RecordingBackend()
    key = XWingPrivateKey.generate(backend)
    assert backend.calls == ["public_key"]
    assert len(key.private_bytes()) == 32


def test_the_low_order_refusal_names_the_cause() -> None:
    key = XWingPrivateKey.from_seed(SEED)
    _, ciphertext = xwing_encapsulate(key.public_key())
    with pytest.raises(KEMError) as caught:
        key.decapsulate(ciphertext[:1088] + bytes(32))
    assert str(caught.value) == "X25519 exchange failed: peer value is a low-order point"


def test_size_refusals_name_the_rule_and_the_size_given() -> None:
    key = XWingPrivateKey.from_seed(SEED)
    with pytest.raises(KeyFormatError) as public_error:
        XWingPublicKey(key.public_key().public_bytes()[:-1])
    assert str(public_error.value) == "X-Wing public key must be 1216 bytes, got 1215"
    with pytest.raises(KeyFormatError) as seed_error:
        XWingPrivateKey(SEED[:-1])
    assert str(seed_error.value) == "X-Wing seed must be 32 bytes, got 31"
    with pytest.raises(KEMError) as ciphertext_error:
        key.decapsulate(bytes(1119))
    assert str(ciphertext_error.value) == "X-Wing ciphertext must be 1120 bytes, got 1119"


def test_derandomised_encapsulation_refusals_say_what_is_needed() -> None:
    public = XWingPrivateKey.from_seed(SEED).public_key()
    with pytest.raises(BackendUnavailableError) as backend_error:
        xwing_encapsulate_derand(public, bytes(64), CryptographyBackend())  # type: ignore[arg-type]
    assert str(backend_error.value) == (
        "CryptographyBackend has no derandomised ML-KEM-768 encapsulation; "
        "known-answer tests need a backend with mlkem768_encapsulate_derand"
    )
    with pytest.raises(KEMError) as seed_error:
        xwing_encapsulate_derand(public, bytes(63), KyberPyDerandomizedMLKEM())
    assert str(seed_error.value) == "X-Wing eseed must be 64 bytes"


def test_public_keys_hash_by_their_encoding() -> None:
    first = XWingPrivateKey.from_seed(SEED).public_key()
    again = XWingPublicKey(first.public_bytes())
    other = XWingPrivateKey.from_seed(bytes(32)).public_key()
    assert hash(first) == hash(again)
    assert hash(first) != hash(other)
    assert len({first, again, other}) == 2
