"""Data keys wrapped to X-Wing recipients, bound to package and recipient."""

from __future__ import annotations

import dataclasses
import secrets

import pytest

from tensorguard.crypto import (
    AEADDecryptionError,
    KeyFormatError,
    XWingPrivateKey,
    unwrap_key,
    wrap_key,
)


@pytest.fixture(scope="module")
def alice() -> XWingPrivateKey:
    return XWingPrivateKey.generate()


@pytest.fixture(scope="module")
def bob() -> XWingPrivateKey:
    return XWingPrivateKey.generate()


def test_each_recipient_recovers_the_data_key(alice: XWingPrivateKey, bob: XWingPrivateKey) -> None:
    data_key = secrets.token_bytes(32)
    for recipient in (alice, bob):
        block = wrap_key(data_key, recipient.public_key(), binding=b"pkg-1")
        assert block.recipient_id == recipient.public_key().fingerprint()
        assert unwrap_key(block, recipient, binding=b"pkg-1") == data_key


def test_block_for_someone_else_is_refused(alice: XWingPrivateKey, bob: XWingPrivateKey) -> None:
    block = wrap_key(secrets.token_bytes(32), alice.public_key(), binding=b"pkg")
    with pytest.raises(AEADDecryptionError, match="addressed to"):
        unwrap_key(block, bob, binding=b"pkg")


def test_swapped_block_contents_are_refused(alice: XWingPrivateKey, bob: XWingPrivateKey) -> None:
    data_key = secrets.token_bytes(32)
    for_alice = wrap_key(data_key, alice.public_key(), binding=b"pkg")
    for_bob = wrap_key(data_key, bob.public_key(), binding=b"pkg")
    relabelled = dataclasses.replace(for_bob, recipient_id=for_alice.recipient_id)
    with pytest.raises(AEADDecryptionError):
        unwrap_key(relabelled, alice, binding=b"pkg")
    mixed = dataclasses.replace(for_alice, kem_ciphertext=for_bob.kem_ciphertext)
    with pytest.raises(AEADDecryptionError):
        unwrap_key(mixed, alice, binding=b"pkg")


def test_block_from_another_package_is_refused(alice: XWingPrivateKey) -> None:
    block = wrap_key(secrets.token_bytes(32), alice.public_key(), binding=b"package-A")
    with pytest.raises(AEADDecryptionError):
        unwrap_key(block, alice, binding=b"package-B")


def test_tampered_wrapped_key_is_refused(alice: XWingPrivateKey) -> None:
    block = wrap_key(secrets.token_bytes(32), alice.public_key(), binding=b"pkg")
    flipped = bytes([block.wrapped_key[0] ^ 1]) + block.wrapped_key[1:]
    with pytest.raises(AEADDecryptionError):
        unwrap_key(dataclasses.replace(block, wrapped_key=flipped), alice, binding=b"pkg")


def test_data_key_length_is_checked(alice: XWingPrivateKey) -> None:
    with pytest.raises(KeyFormatError):
        wrap_key(bytes(16), alice.public_key(), binding=b"pkg")


def test_repr_hides_key_material(alice: XWingPrivateKey) -> None:
    block = wrap_key(secrets.token_bytes(32), alice.public_key(), binding=b"pkg")
    assert block.wrapped_key.hex() not in repr(block)
