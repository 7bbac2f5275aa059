"""Composite signatures: refusals word for word, the caller's backend used throughout.

Written for the mutants of ``tensorguard/crypto/_composite.py`` that the draft-vector
and round-trip tests in ``test_composite_signatures.py`` let through (docs/SECURITY.md §4).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tensorguard.crypto import (
    CompositeSigningKey,
    CompositeVerifyKey,
    CryptoError,
    KeyFormatError,
    SignatureError,
    assemble_composite_signature,
    composite_message_representative,
    sign_mldsa_component,
)
from tensorguard.crypto._backends import CryptographyBackend

MLDSA_SEED = bytes(range(32))
ED25519_PRIVATE = bytes(range(32, 64))


class RecordingBackend(CryptographyBackend):
    """The real ``cryptography`` backend, noting which ML-DSA operations it served."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def mldsa65_public_key(self, seed: bytes) -> bytes:
        self.calls.append("public_key")
        return super().mldsa65_public_key(seed)

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        self.calls.append("sign")
        return super().mldsa65_sign(seed, message, context)

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        self.calls.append("verify")
        return super().mldsa65_verify(public_key, message, signature, context)


@pytest.fixture(scope="module")
def key() -> CompositeSigningKey:
    return CompositeSigningKey(MLDSA_SEED, ED25519_PRIVATE)


def test_a_signing_key_uses_the_given_backend_for_every_operation() -> None:
    backend = RecordingBackend()
    signer = CompositeSigningKey(MLDSA_SEED, ED25519_PRIVATE, backend)
    assert backend.calls == ["public_key"]
    signature = signer.sign(b"release")
    signer.public_key().verify(b"release", signature)
    assert backend.calls == ["public_key", "sign", "verify"]


def test_decoded_and_generated_keys_keep_the_given_backend(key: CompositeSigningKey) -> None:
    backend = RecordingBackend()
    CompositeSigningKey.generate(backend)
    CompositeSigningKey.from_private_bytes(key.private_bytes(), backend)
    verify_key = CompositeVerifyKey.from_public_bytes(key.public_key().public_bytes(), backend)
    verify_key.verify(b"release", key.sign(b"release"))
    assert backend.calls == ["public_key", "public_key", "verify"]


def test_the_mldsa_component_is_signed_by_the_given_or_the_default_backend(
    key: CompositeSigningKey,
) -> None:
    representative = composite_message_representative(b"release", b"tgsp")
    ed25519_half = key.sign(b"release", b"tgsp")[-64:]
    backend = RecordingBackend()
    for mldsa_half in (
        sign_mldsa_component(MLDSA_SEED, representative, backend),
        sign_mldsa_component(MLDSA_SEED, representative),
    ):
        signature = assemble_composite_signature(mldsa_half, ed25519_half)
        key.public_key().verify(b"release", signature, b"tgsp")
    assert backend.calls == ["sign"]


def test_the_default_context_is_empty_and_255_bytes_are_allowed(
    key: CompositeSigningKey,
) -> None:
    assert composite_message_representative(b"m") == composite_message_representative(b"m", b"")
    context = bytes(range(255))
    key.public_key().verify(b"m", key.sign(b"m", context), context)


def test_an_oversized_context_is_refused_in_the_same_words_by_sign_and_verify(
    key: CompositeSigningKey,
) -> None:
    expected = "signature context is 256 bytes; the composite draft allows at most 255"
    with pytest.raises(CryptoError) as sign_error:
        key.sign(b"m", bytes(256))
    assert str(sign_error.value) == expected
    with pytest.raises(SignatureError) as verify_error:
        key.public_key().verify(b"m", key.sign(b"m"), bytes(256))
    assert str(verify_error.value) == expected


def test_a_failed_verification_names_the_key_and_both_components(
    key: CompositeSigningKey,
) -> None:
    public = key.public_key()
    with pytest.raises(SignatureError) as caught:
        public.verify(b"other message", key.sign(b"message"))
    assert str(caught.value) == (
        f"composite signature does not verify under key {public.fingerprint()[:16]}: "
        "ML-DSA-65 and Ed25519 component invalid"
    )


def test_size_and_decoding_refusals_name_the_rule(key: CompositeSigningKey) -> None:
    mldsa_public = key.public_key().mldsa_public_bytes
    cases: list[tuple[type[CryptoError], Callable[[], object], str]] = [
        (
            SignatureError,
            lambda: assemble_composite_signature(bytes(3308), bytes(64)),
            "ML-DSA-65 component signature must be 3309 bytes, got 3308",
        ),
        (
            SignatureError,
            lambda: assemble_composite_signature(bytes(3309), bytes(63)),
            "Ed25519 component signature must be 64 bytes, got 63",
        ),
        (
            SignatureError,
            lambda: key.public_key().verify(b"m", bytes(3372)),
            "composite signature must be 3373 bytes, got 3372",
        ),
        (
            KeyFormatError,
            lambda: CompositeVerifyKey(mldsa_public[:-1], bytes(32)),
            "ML-DSA-65 public key must be 1952 bytes, got 1951",
        ),
        (
            KeyFormatError,
            lambda: CompositeVerifyKey(mldsa_public, bytes(31)),
            "Ed25519 public key does not decode",
        ),
        (
            KeyFormatError,
            lambda: CompositeVerifyKey.from_public_bytes(bytes(1983)),
            "composite public key must be 1984 bytes, got 1983",
        ),
        (
            KeyFormatError,
            lambda: CompositeSigningKey(MLDSA_SEED[:-1], ED25519_PRIVATE),
            "ML-DSA-65 seed must be 32 bytes",
        ),
        (
            KeyFormatError,
            lambda: CompositeSigningKey(MLDSA_SEED, ED25519_PRIVATE[:-1]),
            "Ed25519 private key does not decode",
        ),
        (
            KeyFormatError,
            lambda: CompositeSigningKey.from_private_bytes(bytes(63)),
            "composite private key must be 64 bytes, got 63",
        ),
    ]
    for error, call, message in cases:
        with pytest.raises(error) as caught:
            call()
        assert str(caught.value) == message


def test_verify_keys_hash_by_their_encoding(key: CompositeSigningKey) -> None:
    first = key.public_key()
    again = CompositeVerifyKey.from_public_bytes(first.public_bytes())
    other = CompositeSigningKey(bytes(32), bytes(32)).public_key()
    assert hash(first) == hash(again)
    assert hash(first) != hash(other)
    assert len({first, again, other}) == 2
