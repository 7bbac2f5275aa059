"""Composite ML-DSA-65 + Ed25519: the LAMPS draft vector, component rules, tampering."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, mldsa
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorguard.crypto import (
    CompositeSigner,
    CompositeSigningKey,
    CompositeVerifyKey,
    CryptoError,
    KeyFormatError,
    SignatureError,
    assemble_composite_signature,
    composite_message_representative,
    sign_mldsa_component,
    split_composite_signature,
)
from tensorguard.errors import TensorGuardError
from tests.crypto.conftest import CompositeVector

# The draft's constants, written out here independently of the implementation.
DRAFT_PREFIX = bytes.fromhex("436F6D706F73697465416C676F726974686D5369676E61747572657332303235")
DRAFT_LABEL = b"COMPSIG-MLDSA65-Ed25519-SHA512"


def draft_representative(message: bytes, context: bytes) -> bytes:
    return (
        DRAFT_PREFIX
        + DRAFT_LABEL
        + bytes([len(context)])
        + context
        + hashlib.sha512(message).digest()
    )


def verify_like_the_draft(
    public_key: bytes, message: bytes, signature: bytes, context: bytes
) -> None:
    """Verify with raw primitives following the draft text, not our verifier."""
    m_prime = draft_representative(message, context)
    mldsa.MLDSA65PublicKey.from_public_bytes(public_key[:1952]).verify(
        signature[:3309], m_prime, DRAFT_LABEL
    )
    ed25519.Ed25519PublicKey.from_public_bytes(public_key[1952:]).verify(signature[3309:], m_prime)


@pytest.fixture(scope="module")
def signing_key() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


def test_draft_vector_signature_without_context_verifies(composite_vector: CompositeVector) -> None:
    key = CompositeVerifyKey.from_public_bytes(composite_vector.public_key)
    key.verify(composite_vector.message, composite_vector.signature)


def test_draft_vector_signature_with_context_verifies(composite_vector: CompositeVector) -> None:
    key = CompositeVerifyKey.from_public_bytes(composite_vector.public_key)
    key.verify(
        composite_vector.message, composite_vector.signature_with_context, composite_vector.context
    )


def test_draft_vector_signatures_are_bound_to_their_context(
    composite_vector: CompositeVector,
) -> None:
    key = CompositeVerifyKey.from_public_bytes(composite_vector.public_key)
    with pytest.raises(SignatureError):
        key.verify(composite_vector.message, composite_vector.signature, composite_vector.context)
    with pytest.raises(SignatureError):
        key.verify(composite_vector.message, composite_vector.signature_with_context)


def test_draft_private_key_reproduces_public_key(composite_vector: CompositeVector) -> None:
    key = CompositeSigningKey.from_private_bytes(composite_vector.private_key)
    assert key.public_key().public_bytes() == composite_vector.public_key
    assert key.private_bytes() == composite_vector.private_key


def test_our_signature_verifies_in_the_draft_format(composite_vector: CompositeVector) -> None:
    key = CompositeSigningKey.from_private_bytes(composite_vector.private_key)
    for context in (b"", composite_vector.context):
        signature = key.sign(composite_vector.message, context)
        verify_like_the_draft(
            composite_vector.public_key, composite_vector.message, signature, context
        )


def test_our_ed25519_half_matches_the_draft_byte_for_byte(
    composite_vector: CompositeVector,
) -> None:
    # Ed25519 is deterministic, so equal halves prove M' is constructed exactly as the draft's.
    key = CompositeSigningKey.from_private_bytes(composite_vector.private_key)
    ours = key.sign(composite_vector.message, composite_vector.context)
    assert ours[3309:] == composite_vector.signature_with_context[3309:]
    assert key.sign(composite_vector.message)[3309:] == composite_vector.signature[3309:]


def test_representative_matches_the_draft_construction() -> None:
    assert composite_message_representative(b"msg", b"ctx") == draft_representative(b"msg", b"ctx")


def test_round_trip_and_serialisation(signing_key: CompositeSigningKey) -> None:
    signature = signing_key.sign(b"payload", b"tgsp")
    public = CompositeVerifyKey.from_public_bytes(signing_key.public_key().public_bytes())
    public.verify(b"payload", signature, b"tgsp")
    restored = CompositeSigningKey.from_private_bytes(signing_key.private_bytes())
    assert restored.public_key() == signing_key.public_key()
    restored.public_key().verify(b"x", restored.sign(b"x"))


def test_fingerprint_is_sha256_of_public_bytes(signing_key: CompositeSigningKey) -> None:
    public = signing_key.public_key()
    assert public.fingerprint() == hashlib.sha256(public.public_bytes()).hexdigest()
    assert public.fingerprint() != CompositeSigningKey.generate().public_key().fingerprint()


def test_wrong_message_or_context_is_rejected(signing_key: CompositeSigningKey) -> None:
    signature = signing_key.sign(b"payload", b"ctx")
    public = signing_key.public_key()
    with pytest.raises(SignatureError):
        public.verify(b"payload!", signature, b"ctx")
    with pytest.raises(SignatureError):
        public.verify(b"payload", signature, b"ctx2")


def test_other_key_is_rejected(signing_key: CompositeSigningKey) -> None:
    signature = signing_key.sign(b"payload")
    with pytest.raises(SignatureError):
        CompositeSigningKey.generate().public_key().verify(b"payload", signature)


def test_mldsa_component_alone_is_rejected(signing_key: CompositeSigningKey) -> None:
    mldsa_half, _ = split_composite_signature(signing_key.sign(b"m"))
    _, foreign_ed25519 = split_composite_signature(signing_key.sign(b"other message"))
    for ed25519_half in (bytes(64), foreign_ed25519):
        with pytest.raises(SignatureError, match="Ed25519 component invalid"):
            signing_key.public_key().verify(b"m", mldsa_half + ed25519_half)


def test_ed25519_component_alone_is_rejected(signing_key: CompositeSigningKey) -> None:
    _, ed25519_half = split_composite_signature(signing_key.sign(b"m"))
    foreign_mldsa, _ = split_composite_signature(signing_key.sign(b"other message"))
    for mldsa_half in (bytes(3309), foreign_mldsa):
        with pytest.raises(SignatureError, match="ML-DSA-65 component invalid"):
            signing_key.public_key().verify(b"m", mldsa_half + ed25519_half)


def test_plain_ed25519_signature_over_message_is_not_a_composite_half(
    signing_key: CompositeSigningKey,
) -> None:
    # A classical signature over the raw message (no prefix/label) must not pass.
    raw = CompositeSigningKey.from_private_bytes(signing_key.private_bytes())
    mldsa_half, _ = split_composite_signature(raw.sign(b"m"))
    ed_private = ed25519.Ed25519PrivateKey.from_private_bytes(signing_key.private_bytes()[32:])
    with pytest.raises(SignatureError):
        signing_key.public_key().verify(b"m", mldsa_half + ed_private.sign(b"m"))


@pytest.mark.parametrize("length", [0, 3372, 3374, 4000])
def test_wrong_signature_length_is_rejected(signing_key: CompositeSigningKey, length: int) -> None:
    with pytest.raises(SignatureError):
        signing_key.public_key().verify(b"m", bytes(length))


def test_oversized_context_is_refused(signing_key: CompositeSigningKey) -> None:
    with pytest.raises(CryptoError):
        signing_key.sign(b"m", bytes(256))
    with pytest.raises(SignatureError):
        signing_key.public_key().verify(b"m", signing_key.sign(b"m"), bytes(256))


@pytest.mark.parametrize("length", [0, 63, 65])
def test_malformed_private_key_is_refused(length: int) -> None:
    with pytest.raises(KeyFormatError):
        CompositeSigningKey.from_private_bytes(bytes(length))


@pytest.mark.parametrize("length", [0, 1983, 1985])
def test_malformed_public_key_is_refused(length: int) -> None:
    with pytest.raises(KeyFormatError):
        CompositeVerifyKey.from_public_bytes(bytes(length))


def test_errors_belong_to_the_project_hierarchy() -> None:
    assert issubclass(SignatureError, CryptoError)
    assert issubclass(CryptoError, TensorGuardError)


def test_repr_never_shows_private_material(signing_key: CompositeSigningKey) -> None:
    text = repr(signing_key)
    assert signing_key.private_bytes().hex() not in text
    assert signing_key.private_bytes()[:8].hex() not in text
    assert signing_key.public_key().fingerprint() in text


class TokenStyleSigner:
    """A signer built only from the low-level pieces, as a PKCS#11 signer would be."""

    def __init__(self, mldsa_seed: bytes, ed25519_key: ed25519.Ed25519PrivateKey) -> None:
        self._seed = mldsa_seed
        self._ed25519 = ed25519_key  # stands in for the token-held key
        software = CompositeSigningKey(mldsa_seed, ed25519_key.private_bytes_raw())
        self._public = software.public_key()

    def public_key(self) -> CompositeVerifyKey:
        return self._public

    def sign(self, message: bytes, context: bytes = b"") -> bytes:
        representative = composite_message_representative(message, context)
        mldsa_half = sign_mldsa_component(self._seed, representative)
        return assemble_composite_signature(mldsa_half, self._ed25519.sign(representative))


def test_low_level_pieces_build_an_equivalent_signer() -> None:
    token = TokenStyleSigner(bytes(range(32)), ed25519.Ed25519PrivateKey.generate())
    assert isinstance(token, CompositeSigner)
    assert isinstance(CompositeSigningKey.generate(), CompositeSigner)
    signature = token.sign(b"release", b"tgsp")
    token.public_key().verify(b"release", signature, b"tgsp")
    verify_like_the_draft(token.public_key().public_bytes(), b"release", signature, b"tgsp")


def test_assemble_checks_component_lengths() -> None:
    with pytest.raises(SignatureError):
        assemble_composite_signature(bytes(3308), bytes(64))
    with pytest.raises(SignatureError):
        assemble_composite_signature(bytes(3309), bytes(63))


@settings(max_examples=15, deadline=None)
@given(message=st.binary(max_size=512), context=st.binary(max_size=255), data=st.data())
def test_property_sign_verify_and_any_flip_fails(
    signing_key: CompositeSigningKey, message: bytes, context: bytes, data: st.DataObject
) -> None:
    signature = signing_key.sign(message, context)
    signing_key.public_key().verify(message, signature, context)
    position = data.draw(st.integers(0, len(signature) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = bytearray(signature)
    tampered[position] ^= 1 << bit
    with pytest.raises(SignatureError):
        signing_key.public_key().verify(message, bytes(tampered), context)
