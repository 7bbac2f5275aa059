"""PKCS11KeyProvider against a real SoftHSM2 token: the wrapping's exact construction,
the attributes of every object it creates in the token, and each refusal word for word.

Written to kill mutmut's surviving mutants of ``tensorguard/keys/_pkcs11_provider.py``
(#18 item 6; docs/SECURITY.md §4). Misconfigured tokens (duplicate or missing objects,
half key pairs, a key that does not match its record) are made with real PKCS#11 calls
on a second handle of the same login.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pkcs11
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, EncryptMixin

from tensorguard.crypto import CompositeVerifyKey, get_backend
from tensorguard.keys import (
    KeyExistsError,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProviderConfigError,
    KeyPurpose,
    KeyRecordFormatError,
    PKCS11KeyProvider,
    TokenError,
)
from tensorguard.keys._pkcs11_provider import (
    ED25519_EC_PARAMS,
    SIGNING_LABEL_PREFIX,
    PKCS11CompositeSigner,
    TokenWrappedRecordKeys,
    _ed25519_point,
    _wrap_context,
    check_gcm_iv_policy,
)
from tensorguard.keys._pkcs11_session import TokenSession
from tensorguard.keys._record import RecordHeader, b64decode, b64encode, parse_record
from tests.keys.conftest import OTHER_TOKEN, PRIMARY_TOKEN
from tests.services.softhsm import SoftHSMStore, SoftHSMToken

LOGGER_NAME = "tensorguard.keys._pkcs11_provider"


def _unique(prefix: str) -> str:
    """Token objects outlive a test, so every test uses its own names and labels."""
    return f"{prefix}-{os.urandom(4).hex()}"


@pytest.fixture
def token(softhsm_token: SoftHSMToken) -> Iterator[TokenSession]:
    """A handle on the shared login, for the raw PKCS#11 calls a test makes itself."""
    with TokenSession(
        softhsm_token.module_path, softhsm_token.label, softhsm_token.user_pin
    ) as opened:
        yield opened


@pytest.fixture
def wrap_label() -> str:
    """A wrapping-key label of this test's own."""
    return _unique("wrap")


@pytest.fixture
def provider(
    softhsm_token: SoftHSMToken, key_dir: Path, wrap_label: str
) -> Iterator[PKCS11KeyProvider]:
    with PKCS11KeyProvider(
        softhsm_token.module_path,
        softhsm_token.label,
        softhsm_token.user_pin,
        key_dir,
        wrap_key_label=wrap_label,
        production=False,
    ) as opened:
        yield opened


def _aes_key(token: TokenSession, label: str) -> pkcs11.SecretKey:
    with token.lock:
        key = token.session.get_key(
            object_class=ObjectClass.SECRET_KEY, key_type=KeyType.AES, label=label
        )
    assert isinstance(key, pkcs11.SecretKey)
    return key


def _ed25519_pair(token: TokenSession, name: str) -> list[pkcs11.Object]:
    label = SIGNING_LABEL_PREFIX + name
    with token.lock:
        return list(token.session.get_objects({Attribute.LABEL: label}))


def _sealed_header(keys: TokenWrappedRecordKeys, name: str) -> tuple[RecordHeader, bytes]:
    params, data_key = keys.new_record_key(name, KeyPurpose.GENERIC)
    header = RecordHeader(
        name=name,
        purpose=KeyPurpose.GENERIC,
        provider="pkcs11",
        nonce=os.urandom(12),
        seal=params,
    )
    return header, data_key


# --- GCM IV policy, wrap context, CKA_EC_POINT ------------------------------------------


def test_gcm_iv_policies() -> None:
    assert check_gcm_iv_policy("auto") == "auto"
    assert check_gcm_iv_policy("token") == "token"
    with pytest.raises(KeyProviderConfigError) as refused:
        check_gcm_iv_policy("Token")
    assert str(refused.value) == (
        "TG_PKCS11_GCM_IV='Token' is not a GCM IV policy; use 'auto' (the token's IV when "
        "it generates one, else a host IV) or 'token' (the token's IV only)"
    )


def test_wrap_context_binds_name_and_purpose() -> None:
    assert _wrap_context("release-1", KeyPurpose.SIGNING) == (
        b"tensorguard/keys/pkcs11/v1\x00release-1\x00composite-signing"
    )


def test_ed25519_point_accepts_der_and_raw_only() -> None:
    point = bytes(range(32))
    assert _ed25519_point(b"\x04\x20" + point) == point
    assert _ed25519_point(point) == point
    for bad in (b"\x04\x21" + point, b"\x03\x20" + point, point[:31], point + b"\x00"):
        with pytest.raises(TokenError) as refused:
            _ed25519_point(bad)
        assert str(refused.value) == (
            f"the token returned a {len(bad)}-byte CKA_EC_POINT for an Ed25519 key; "
            "expected 32 bytes or a 34-byte DER OCTET STRING"
        )
    with pytest.raises(TokenError, match="35-byte"):
        _ed25519_point(b"\x04\x20" + point + b"\x00")


# --- the token-held wrapping key ----------------------------------------------------------


def test_wrapping_key_is_created_once_with_exactly_these_attributes(
    provider: PKCS11KeyProvider,
    token: TokenSession,
    wrap_label: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        provider.store_secret(_unique("blob"), KeyPurpose.GENERIC, b"first")
        provider.store_secret(_unique("blob"), KeyPurpose.GENERIC, b"second")
    created = [r for r in caplog.records if r.name == LOGGER_NAME]
    assert [(r.levelno, r.getMessage()) for r in created] == [
        (
            logging.INFO,
            f"creating AES-256 wrapping key {wrap_label!r} in token {PRIMARY_TOKEN!r} "
            "(sensitive, non-extractable)",
        )
    ]
    key = _aes_key(token, wrap_label)
    with token.lock:
        assert key[Attribute.VALUE_LEN] == 32
        for attribute, value in {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.ENCRYPT: True,
            Attribute.DECRYPT: True,
            Attribute.WRAP: False,
            Attribute.UNWRAP: False,
            Attribute.SIGN: False,
            Attribute.VERIFY: False,
        }.items():
            assert key[attribute] is value, attribute


def test_the_record_key_is_aes_gcm_under_the_token_key_with_name_and_purpose_as_aad(
    provider: PKCS11KeyProvider, token: TokenSession, wrap_label: str
) -> None:
    name, secret = _unique("ckks"), os.urandom(100)
    provider.store_secret(name, KeyPurpose.CKKS_SECRET, secret)
    path = provider.records.directory.record_path(name, KeyPurpose.CKKS_SECRET)
    record = parse_record(path.read_bytes())
    seal = dict(record.header.seal)
    assert set(seal) == {
        "wrap_mechanism",
        "token",
        "wrapping_key",
        "wrap_nonce",
        "wrapped_key",
        "wrap_iv_source",
    }
    assert (seal["wrap_mechanism"], seal["token"], seal["wrapping_key"]) == (
        "CKM_AES_GCM",
        PRIMARY_TOKEN,
        wrap_label,
    )
    assert seal["wrap_iv_source"] == "host"
    nonce = b64decode(str(seal["wrap_nonce"]), "wrap_nonce")
    wrapped = b64decode(str(seal["wrapped_key"]), "wrapped_key")
    assert (len(nonce), len(wrapped)) == (12, 32 + 16)
    aad = b"tensorguard/keys/pkcs11/v1\x00" + name.encode() + b"\x00ckks-secret-context"
    with token.lock:
        data_key = cast(
            bytes,
            cast(DecryptMixin, _aes_key(token, wrap_label)).decrypt(
                wrapped, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad, 128)
            ),
        )
    assert len(data_key) == 32
    opened = AESGCM(data_key).decrypt(
        record.header.nonce, record.ciphertext, record.associated_data
    )
    assert opened == secret


def test_several_wrapping_keys_with_one_label_are_refused_for_sealing_and_opening(
    provider: PKCS11KeyProvider, token: TokenSession, wrap_label: str
) -> None:
    name = _unique("blob")
    provider.store_secret(name, KeyPurpose.GENERIC, b"sealed before the duplicate")
    with token.lock:
        token.session.generate_key(KeyType.AES, 256, label=wrap_label, store=True)
    expected = (
        f"token {PRIMARY_TOKEN!r} holds several AES keys labelled {wrap_label!r}; keep "
        "exactly one (destroy the newest)"
    )
    with pytest.raises(TokenError) as sealing:
        provider.store_secret(_unique("blob"), KeyPurpose.GENERIC, b"x")
    assert str(sealing.value) == expected
    # The refused lookup finished its token search: the shared session still finds objects
    # while the error is held (python-pkcs11's get_key left it open: OperationActive).
    with token.lock:
        assert list(token.session.get_objects({Attribute.LABEL: _unique("none")})) == []
    with pytest.raises(TokenError) as opening:
        provider.load_secret(name, KeyPurpose.GENERIC)
    assert str(opening.value) == expected


@pytest.mark.parametrize("missing", [Attribute.ENCRYPT, Attribute.DECRYPT])
def test_a_wrapping_key_that_cannot_encrypt_or_decrypt_is_refused_clearly(
    provider: PKCS11KeyProvider, token: TokenSession, wrap_label: str, missing: Attribute
) -> None:
    with token.lock:
        token.session.generate_key(
            KeyType.AES, 256, label=wrap_label, store=True, template={missing: False}
        )
    with pytest.raises(TokenError) as refused:  # was an AttributeError traceback
        provider.store_secret(_unique("blob"), KeyPurpose.GENERIC, b"x")
    assert str(refused.value) == (
        f"token {PRIMARY_TOKEN!r} holds an AES key labelled {wrap_label!r} that does not "
        "allow both CKA_ENCRYPT and CKA_DECRYPT, so it cannot wrap record keys: set "
        "TG_PKCS11_WRAP_KEY_LABEL to the key that sealed your records, or to an unused label"
    )


def test_opening_never_creates_a_missing_wrapping_key(token: TokenSession, wrap_label: str) -> None:
    sealer = TokenWrappedRecordKeys(token, wrap_label)  # the default policy is "auto"
    header, _ = _sealed_header(sealer, _unique("blob"))
    _aes_key(token, wrap_label).destroy()
    with pytest.raises(KeyIntegrityError) as refused:
        sealer.open_record_key(header)
    assert str(refused.value) == (
        f"token {PRIMARY_TOKEN!r} has no wrapping key {wrap_label!r}, so it cannot unwrap "
        "keys sealed by another token: select the token that sealed them with "
        "TG_PKCS11_TOKEN_LABEL"
    )
    with pytest.raises(pkcs11.exceptions.NoSuchKey):
        _aes_key(token, wrap_label)


def test_a_malformed_seal_names_the_pkcs11_provider(token: TokenSession, wrap_label: str) -> None:
    keys = TokenWrappedRecordKeys(token, wrap_label)
    header, _ = _sealed_header(keys, "malformed")
    broken = dataclasses.replace(header, seal={**header.seal, "wrap_mechanism": "CKM_AES_CBC"})
    with pytest.raises(KeyRecordFormatError) as refused:
        keys.open_record_key(broken)
    assert str(refused.value).startswith(
        "key record 'malformed' sealing parameters for the pkcs11 provider "
    )


def test_a_record_wrapped_by_another_token_key_label_names_both(
    token: TokenSession, wrap_label: str
) -> None:
    header, _ = _sealed_header(TokenWrappedRecordKeys(token, wrap_label), "wrapped-here")
    with pytest.raises(KeyIntegrityError) as refused:
        TokenWrappedRecordKeys(token, "another-wrap").open_record_key(header)
    assert str(refused.value) == (
        f"key 'wrapped-here' was wrapped by token key {wrap_label!r}, but this provider uses "
        "'another-wrap': set TG_PKCS11_WRAP_KEY_LABEL to the key that sealed it"
    )


def test_an_unwrap_failure_names_the_sealing_token_only_when_it_differs(
    token: TokenSession, wrap_label: str
) -> None:
    keys = TokenWrappedRecordKeys(token, wrap_label)
    header, data_key = _sealed_header(keys, "altered")
    assert keys.open_record_key(header) == data_key
    wrapped = bytearray(b64decode(str(header.seal["wrapped_key"]), "wrapped_key"))
    wrapped[0] ^= 1
    altered = dataclasses.replace(
        header, seal={**header.seal, "wrapped_key": b64encode(bytes(wrapped))}
    )
    reason = ": the record was altered, renamed, or sealed by another token's wrapping key"
    with pytest.raises(KeyIntegrityError) as same_token:
        keys.open_record_key(altered)
    assert str(same_token.value) == (
        f"token {PRIMARY_TOKEN!r} could not unwrap the data key of key 'altered' "
        f"(generic-secret){reason}"
    )
    elsewhere = dataclasses.replace(altered, seal={**altered.seal, "token": "hsm-2"})
    with pytest.raises(KeyIntegrityError) as other_token:
        keys.open_record_key(elsewhere)
    assert str(other_token.value) == (
        f"token {PRIMARY_TOKEN!r} could not unwrap the data key of key 'altered' "
        f"(generic-secret) (it was sealed on token 'hsm-2', this is {PRIMARY_TOKEN!r})"
        f"{reason}"
    )
    renamed = dataclasses.replace(header, name="renamed")
    with pytest.raises(KeyIntegrityError, match="could not unwrap the data key of key 'renamed'"):
        keys.open_record_key(renamed)


def test_an_unwrapped_key_of_the_wrong_size_is_refused(
    token: TokenSession, wrap_label: str
) -> None:
    keys = TokenWrappedRecordKeys(token, wrap_label)
    header, _ = _sealed_header(keys, "short-key")
    nonce = os.urandom(12)
    with token.lock:
        short = cast(
            bytes,
            cast(EncryptMixin, _aes_key(token, wrap_label)).encrypt(
                os.urandom(16),
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(
                    nonce, _wrap_context("short-key", KeyPurpose.GENERIC), 128
                ),
            ),
        )
    forged = dataclasses.replace(
        header,
        seal={**header.seal, "wrap_nonce": b64encode(nonce), "wrapped_key": b64encode(short)},
    )
    with pytest.raises(KeyIntegrityError) as refused:
        keys.open_record_key(forged)
    assert str(refused.value) == "the unwrapped data key of 'short-key' has a bad size"


def test_every_wrap_is_checked_by_unwrapping_it_with_the_recorded_iv(
    token: TokenSession, wrap_label: str
) -> None:
    keys = TokenWrappedRecordKeys(token, wrap_label)
    header, data_key = _sealed_header(keys, "checked")
    nonce = b64decode(str(header.seal["wrap_nonce"]), "wrap_nonce")
    wrapped = b64decode(str(header.seal["wrapped_key"]), "wrapped_key")
    context = _wrap_context("checked", KeyPurpose.GENERIC)
    wrapping_key = _aes_key(token, wrap_label)
    with token.lock:
        keys._check_unwraps(wrapping_key, wrapped, nonce, context, data_key)
        with pytest.raises(TokenError) as lost_iv:
            keys._check_unwraps(wrapping_key, wrapped, bytes(12), context, data_key)
        with pytest.raises(TokenError) as other_key:
            keys._check_unwraps(wrapping_key, wrapped, nonce, context, os.urandom(32))
    assert str(lost_iv.value) == (
        f"token {PRIMARY_TOKEN!r} cannot unwrap a data key it just wrapped with the recorded "
        "GCM IV (GeneralError); its IV handling is not supported: report the token model"
    )
    assert str(other_key.value) == (
        f"token {PRIMARY_TOKEN!r} returned a different data key on unwrap"
    )


def test_the_token_policy_refusal_in_full(token: TokenSession, wrap_label: str) -> None:
    with pytest.raises(KeyProviderConfigError, match="not a GCM IV policy"):
        TokenWrappedRecordKeys(token, wrap_label, "host")
    with pytest.raises(TokenError) as refused:
        TokenWrappedRecordKeys(token, wrap_label, "token").new_record_key("n", KeyPurpose.GENERIC)
    assert str(refused.value) == (
        f"token {PRIMARY_TOKEN!r} used the caller's GCM IV instead of generating one, and "
        "TG_PKCS11_GCM_IV=token requires token-generated IVs; use a token with IV "
        "generation (FIPS mode) or set TG_PKCS11_GCM_IV=auto"
    )


# --- the Ed25519 half and the composite signer ---------------------------------------------


def test_generated_ed25519_objects_have_exactly_these_attributes(
    provider: PKCS11KeyProvider, token: TokenSession, caplog: pytest.LogCaptureFixture
) -> None:
    name = _unique("release")
    with caplog.at_level(logging.INFO, logger=LOGGER_NAME):
        signer = provider.generate_signing_key(name)
    assert (
        f"generated composite signing key {name!r} in token {PRIMARY_TOKEN!r} "
        f"(fingerprint {signer.public_key().fingerprint()})"
    ) in [r.getMessage() for r in caplog.records if r.name == LOGGER_NAME]
    objects = {obj.object_class: obj for obj in _ed25519_pair(token, name)}
    assert set(objects) == {ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY}
    public, private = objects[ObjectClass.PUBLIC_KEY], objects[ObjectClass.PRIVATE_KEY]
    with token.lock:
        assert public[Attribute.EC_PARAMS] == ED25519_EC_PARAMS
        assert public[Attribute.TOKEN] is True
        assert public[Attribute.VERIFY] is True
        for attribute, value in {
            Attribute.TOKEN: True,
            Attribute.PRIVATE: True,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.SIGN: True,
        }.items():
            assert private[attribute] is value, attribute
    assert repr(signer) == (
        f"PKCS11CompositeSigner(token={PRIMARY_TOKEN!r}, "
        f"fingerprint={signer.public_key().fingerprint()!r})"
    )


def test_a_failed_seal_removes_the_half_generated_key_pair(
    softhsm_token: SoftHSMToken, key_dir: Path, token: TokenSession
) -> None:
    name = _unique("release")
    with (
        PKCS11KeyProvider(
            softhsm_token.module_path,
            softhsm_token.label,
            softhsm_token.user_pin,
            key_dir,
            production=False,
            gcm_iv="token",  # SoftHSM2 takes the caller's IV, so sealing the seed fails
        ) as strict,
        pytest.raises(TokenError, match="TG_PKCS11_GCM_IV=token"),
    ):
        strict.generate_signing_key(name)
    assert _ed25519_pair(token, name) == []
    assert not (key_dir / f"{name}.{KeyPurpose.SIGNING.value}").exists()
    with PKCS11KeyProvider(
        softhsm_token.module_path, softhsm_token.label, softhsm_token.user_pin, key_dir
    ) as again:
        again.generate_signing_key(name)  # nothing left behind blocks a second attempt


def test_half_and_duplicated_key_pairs_are_refused_in_full(
    provider: PKCS11KeyProvider, token: TokenSession
) -> None:
    label_of = {}
    for object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
        name = _unique("release")
        provider.generate_signing_key(name)
        label_of[object_class] = SIGNING_LABEL_PREFIX + name
        with token.lock:
            token.session.get_key(object_class=object_class, label=label_of[object_class]).destroy()
        with pytest.raises(TokenError) as half:
            provider.signer(name)
        assert str(half.value) == (
            f"token {PRIMARY_TOKEN!r} holds only half of the Ed25519 key pair "
            f"{label_of[object_class]!r}; remove the remaining object and generate the key again"
        )
    name = _unique("release")
    provider.generate_signing_key(name)
    label = SIGNING_LABEL_PREFIX + name
    with token.lock:
        token.session.generate_keypair(
            KeyType.EC_EDWARDS,
            mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            store=True,
            label=label,
            public_template={Attribute.EC_PARAMS: ED25519_EC_PARAMS},
        )
    with pytest.raises(TokenError) as doubled:
        provider.signer(name)
    assert str(doubled.value) == (
        f"token {PRIMARY_TOKEN!r} holds several PUBLIC_KEY objects labelled {label!r}; "
        "remove the duplicates"
    )


def test_token_objects_without_a_record_and_a_record_without_token_objects(
    provider: PKCS11KeyProvider, token: TokenSession
) -> None:
    name = _unique("release")
    provider.generate_signing_key(name)
    label = SIGNING_LABEL_PREFIX + name
    provider.records.directory.record_path(name, KeyPurpose.SIGNING).unlink()
    with pytest.raises(KeyExistsError) as exists:
        provider.generate_signing_key(name)
    assert str(exists.value) == (
        f"token {PRIMARY_TOKEN!r} already holds an Ed25519 key {label!r} without a sealed "
        "ML-DSA record (an interrupted generation?): destroy it with the HSM's tools or "
        "choose another name"
    )
    assert len(_ed25519_pair(token, name)) == 2

    other = _unique("release")
    provider.generate_signing_key(other)
    for obj in _ed25519_pair(token, other):
        obj.destroy()
    with pytest.raises(KeyNotFoundError) as missing:
        provider.signer(other)
    assert str(missing.value) == (
        f"token {PRIMARY_TOKEN!r} has no Ed25519 key "
        f"{SIGNING_LABEL_PREFIX + other!r} for signing key {other!r}: select the token "
        "that generated it with TG_PKCS11_TOKEN_LABEL"
    )


def test_a_record_without_its_ed25519_binding_or_with_a_short_seed_is_refused(
    provider: PKCS11KeyProvider,
) -> None:
    name = _unique("release")
    signer = provider.generate_signing_key(name)
    binding = {"ed25519_public": b64encode(signer.public_key().ed25519_public_bytes)}
    provider.records.seal(name, KeyPurpose.SIGNING, os.urandom(32), replace=True)
    with pytest.raises(KeyIntegrityError) as unbound:
        provider.signer(name)
    assert str(unbound.value) == (
        f"the token's Ed25519 key for {name!r} is not the one its ML-DSA record was sealed "
        "with: the token object was replaced; restore the original token"
    )
    provider.records.seal(
        name, KeyPurpose.SIGNING, os.urandom(31), replace=True, attributes=binding
    )
    with pytest.raises(KeyIntegrityError) as short:
        provider.signer(name)
    assert str(short.value) == f"the ML-DSA-65 seed of {name!r} has the wrong size"
    provider.records.seal(
        name, KeyPurpose.SIGNING, os.urandom(32), replace=True, attributes={"ed25519_public": "*"}
    )
    with pytest.raises(KeyRecordFormatError) as not_base64:
        provider.signer(name)
    assert str(not_base64.value) == (
        "key record field 'ed25519_public' is not valid base64; the file is corrupt"
    )
    seed = os.urandom(32)
    provider.records.seal(name, KeyPurpose.SIGNING, seed, replace=True, attributes=binding)
    rebuilt = provider.signer(name).public_key()
    assert rebuilt.public_bytes() == (
        CompositeVerifyKey(
            get_backend().mldsa65_public_key(seed), signer.public_key().ed25519_public_bytes
        ).public_bytes()
    )


def test_a_token_signature_that_does_not_verify_never_leaves_the_signer(
    provider: PKCS11KeyProvider, token: TokenSession
) -> None:
    first, second = _unique("release"), _unique("release")
    provider.generate_signing_key(first)
    other_public = provider.generate_signing_key(second).public_key()
    private = next(
        obj for obj in _ed25519_pair(token, first) if obj.object_class is ObjectClass.PRIVATE_KEY
    )
    assert isinstance(private, pkcs11.PrivateKey)
    mismatched = PKCS11CompositeSigner(token, private, os.urandom(32), other_public)
    with pytest.raises(TokenError) as refused:
        mismatched.sign(b"message")
    assert str(refused.value) == (
        f"token {PRIMARY_TOKEN!r} produced an Ed25519 signature that does not verify under "
        "its own public key; refusing to release it"
    )

    signer = provider.signer(first)
    signer.public_key().verify(b"message", signer.sign(b"message", b"ctx"), b"ctx")
    for obj in _ed25519_pair(token, first):
        obj.destroy()
    with pytest.raises(TokenError) as gone:
        signer.sign(b"message")
    assert str(gone.value) == (
        f"token {PRIMARY_TOKEN!r}: signing with CKM_EDDSA failed (ObjectHandleInvalid)"
    )


# python-pkcs11 reports its own failed search clean-up on the dead session as unraisable.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_session_lost_mid_use_names_the_operation_that_failed(
    softhsm: SoftHSMStore, key_dir: Path
) -> None:
    """The shared session is closed behind the provider's back (as when a token is removed):
    each operation reports itself and the PKCS#11 error, never a raw pkcs11 traceback."""
    other = softhsm.token(OTHER_TOKEN)
    login = (other.module_path, other.label, other.user_pin)
    first = TokenSession(*login)
    with PKCS11KeyProvider(*login, key_dir, production=False) as provider:
        kept = _unique("blob")
        provider.store_secret(kept, KeyPurpose.GENERIC, b"sealed while the session lived")
        dead = first.session
        dead.close()  # C_Logout and C_CloseSession on the shared handle
        failures: dict[str, Callable[[], object]] = {
            "wrapping a data key with CKM_AES_GCM": lambda: provider.store_secret(
                _unique("blob"), KeyPurpose.GENERIC, b"x"
            ),
            "unwrapping a data key": lambda: provider.load_secret(kept, KeyPurpose.GENERIC),
            "generating an Ed25519 key pair (the token must support "
            "CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA)": lambda: provider.generate_signing_key(
                _unique("release")
            ),
        }
        for action, operation in failures.items():
            with pytest.raises(TokenError) as failed:
                operation()
            assert str(failed.value) == (
                f"token {OTHER_TOKEN!r}: {action} failed (SessionHandleInvalid)"
            )
    # The last handle closes the (already closed) session again: PKCS#11 refuses that.
    with pytest.raises(pkcs11.exceptions.SessionHandleInvalid):
        first.close()
    with TokenSession(*login) as again:  # the registry forgot the dead login
        assert again.session is not dead


# --- the provider itself -----------------------------------------------------------------


def test_provider_repr_and_production_default(
    softhsm_token: SoftHSMToken, key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    login = (softhsm_token.module_path, softhsm_token.label, softhsm_token.user_pin)
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    with PKCS11KeyProvider(*login, key_dir) as from_environment:
        assert from_environment.production is True
        assert repr(from_environment) == (
            f"PKCS11KeyProvider(token={PRIMARY_TOKEN!r}, key_dir={str(key_dir)!r})"
        )
        assert repr(from_environment.records._keys) == (
            f"TokenWrappedRecordKeys(token={PRIMARY_TOKEN!r})"
        )
    with PKCS11KeyProvider(*login, key_dir, production=False) as development:
        assert development.production is False
    monkeypatch.delenv("TG_ENVIRONMENT")
    with PKCS11KeyProvider(*login, key_dir) as default:
        assert default.production is False
