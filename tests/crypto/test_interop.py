"""Interop with independent pure-Python FIPS 203/204 implementations (kyber-py, dilithium-py)."""

from __future__ import annotations

import secrets

import pytest
from dilithium_py.ml_dsa import ML_DSA_65
from kyber_py.ml_kem import ML_KEM_768

from tensorguard.crypto import (
    CompositeSigningKey,
    XWingPrivateKey,
    composite_message_representative,
    split_composite_signature,
    xwing_decapsulate,
)
from tensorguard.crypto._backends import PQCBackend, available_backends
from tensorguard.crypto._composite import COMPOSITE_LABEL

BACKENDS = available_backends()


@pytest.fixture(params=BACKENDS, ids=[backend.name for backend in BACKENDS])
def backend(request: pytest.FixtureRequest) -> PQCBackend:
    chosen: PQCBackend = request.param
    return chosen


def _signing_backends() -> list[PQCBackend]:
    # Only backends that can expand ML-DSA seeds can sign (see the liboqs backend docs).
    return [b for b in BACKENDS if b.name == "cryptography"]


@pytest.mark.parametrize("signer", _signing_backends(), ids=lambda b: b.name)
def test_mldsa65_keys_from_seed_match_reference(signer: PQCBackend) -> None:
    seed = secrets.token_bytes(32)
    reference_public, _ = ML_DSA_65.key_derive(seed)
    assert signer.mldsa65_public_key(seed) == reference_public


@pytest.mark.parametrize("signer", _signing_backends(), ids=lambda b: b.name)
def test_reference_verifies_our_mldsa65_signatures(signer: PQCBackend) -> None:
    seed = secrets.token_bytes(32)
    public = signer.mldsa65_public_key(seed)
    for context in (b"", b"tensorguard", bytes(255)):
        signature = signer.mldsa65_sign(seed, b"adapter release", context)
        assert ML_DSA_65.verify(public, b"adapter release", signature, ctx=context)
        assert not ML_DSA_65.verify(public, b"adapter releasE", signature, ctx=context)


def test_we_verify_reference_mldsa65_signatures(backend: PQCBackend) -> None:
    public, private = ML_DSA_65.keygen()
    signature = ML_DSA_65.sign(private, b"message", ctx=b"ctx")
    assert backend.mldsa65_verify(public, b"message", signature, b"ctx")
    assert not backend.mldsa65_verify(public, b"message", signature, b"other")


def test_reference_verifies_mldsa_half_of_composite_signature() -> None:
    key = CompositeSigningKey.generate()
    signature = key.sign(b"package header", b"tgsp")
    mldsa_half, _ = split_composite_signature(signature)
    representative = composite_message_representative(b"package header", b"tgsp")
    assert ML_DSA_65.verify(
        key.public_key().mldsa_public_bytes, representative, mldsa_half, ctx=COMPOSITE_LABEL
    )


def test_mlkem768_keys_from_seed_match_reference(backend: PQCBackend) -> None:
    seed = secrets.token_bytes(64)
    reference_public, _ = ML_KEM_768.key_derive(seed)
    assert backend.mlkem768_public_key(seed) == reference_public


def test_reference_decapsulates_our_mlkem768_encapsulations(backend: PQCBackend) -> None:
    seed = secrets.token_bytes(64)
    reference_public, reference_private = ML_KEM_768.key_derive(seed)
    shared_secret, ciphertext = backend.mlkem768_encapsulate(reference_public)
    assert ML_KEM_768.decaps(reference_private, ciphertext) == shared_secret


def test_we_decapsulate_reference_mlkem768_encapsulations(backend: PQCBackend) -> None:
    seed = secrets.token_bytes(64)
    reference_public, _ = ML_KEM_768.key_derive(seed)
    shared_secret, ciphertext = ML_KEM_768.encaps(reference_public)
    assert backend.mlkem768_decapsulate(seed, ciphertext) == shared_secret


def test_xwing_decapsulates_reference_built_encapsulation() -> None:
    # Build an X-Wing ciphertext whose ML-KEM half comes from kyber-py and check our
    # decapsulation agrees with the draft's combiner computed here from first principles.
    import hashlib

    from cryptography.hazmat.primitives.asymmetric import x25519

    key = XWingPrivateKey.generate()
    public = key.public_key().public_bytes()
    mlkem_secret, mlkem_ct = ML_KEM_768.encaps(public[:1184])
    ephemeral = x25519.X25519PrivateKey.generate()
    ct_x = ephemeral.public_key().public_bytes_raw()
    ss_x = ephemeral.exchange(x25519.X25519PublicKey.from_public_bytes(public[1184:]))
    expected = hashlib.sha3_256(mlkem_secret + ss_x + ct_x + public[1184:] + b"\\.//^\\").digest()
    assert xwing_decapsulate(key, mlkem_ct + ct_x) == expected
