"""PKCS11KeyProvider against a real SoftHSM2 token started by the test suite."""

from __future__ import annotations

import argparse
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pkcs11
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from tensorguard.cli.keys import add_keys_commands
from tensorguard.crypto._composite import (
    CompositeVerifyKey,
    composite_message_representative,
    split_composite_signature,
)
from tensorguard.crypto._errors import SignatureError
from tensorguard.keys import (
    KeyExistsError,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProviderConfigError,
    KeyProviderProductionError,
    KeyProviderUnavailable,
    KeyPurpose,
    PKCS11KeyProvider,
    TokenError,
    key_provider_from_env,
)
from tensorguard.keys._pkcs11_provider import ED25519_EC_PARAMS, SIGNING_LABEL_PREFIX
from tests.keys.conftest import OTHER_TOKEN
from tests.services.softhsm import SoftHSMStore, SoftHSMToken


@pytest.fixture
def provider(softhsm_token: SoftHSMToken, key_dir: Path) -> Iterator[PKCS11KeyProvider]:
    with PKCS11KeyProvider(
        softhsm_token.module_path,
        softhsm_token.label,
        softhsm_token.user_pin,
        key_dir,
        production=False,
    ) as opened:
        yield opened


def _unique(prefix: str) -> str:
    """Token objects outlive a test, so every test uses its own key names."""
    return f"{prefix}-{os.urandom(4).hex()}"


def _token_session(token: SoftHSMToken) -> pkcs11.Session:
    """A second session on the token; it shares the provider's login (PKCS#11 semantics)."""
    return pkcs11.lib(token.module_path).get_token(token_label=token.label).open(rw=True)


def test_composite_signature_verifies_and_ed25519_half_comes_from_the_token(
    provider: PKCS11KeyProvider, softhsm_token: SoftHSMToken
) -> None:
    name = _unique("release")
    signer = provider.generate_signing_key(name)
    message, context = b"tgsp header bytes", b"tgsp-v2"
    signature = signer.sign(message, context)

    public = CompositeVerifyKey.from_public_bytes(signer.public_key().public_bytes())
    public.verify(message, signature, context)
    with pytest.raises(SignatureError):
        public.verify(message, signature, b"other-context")

    with _token_session(softhsm_token) as session:
        token_public = session.get_key(
            object_class=ObjectClass.PUBLIC_KEY,
            key_type=KeyType.EC_EDWARDS,
            label=SIGNING_LABEL_PREFIX + name,
        )
        assert token_public[Attribute.EC_PARAMS] == ED25519_EC_PARAMS
        point = token_public[Attribute.EC_POINT]
    ed25519_public = point[2:] if len(point) == 34 else point
    assert public.ed25519_public_bytes == ed25519_public
    _, ed25519_signature = split_composite_signature(signature)
    ed25519.Ed25519PublicKey.from_public_bytes(ed25519_public).verify(
        ed25519_signature, composite_message_representative(message, context)
    )


def test_signer_survives_a_new_provider(
    provider: PKCS11KeyProvider, softhsm_token: SoftHSMToken, key_dir: Path
) -> None:
    name = _unique("release")
    fingerprint = provider.generate_signing_key(name).public_key().fingerprint()
    with PKCS11KeyProvider(
        softhsm_token.module_path, softhsm_token.label, softhsm_token.user_pin, key_dir
    ) as again:
        signer = again.signer(name)
        assert signer.public_key().fingerprint() == fingerprint
        signer.public_key().verify(b"m", signer.sign(b"m"))


def test_token_keys_are_sensitive_and_not_extractable(
    provider: PKCS11KeyProvider, softhsm_token: SoftHSMToken
) -> None:
    name = _unique("release")
    provider.generate_signing_key(name)
    with _token_session(softhsm_token) as session:
        private = session.get_key(
            object_class=ObjectClass.PRIVATE_KEY, label=SIGNING_LABEL_PREFIX + name
        )
        wrapping = session.get_key(object_class=ObjectClass.SECRET_KEY, label="tensorguard-wrap")
        for key in (private, wrapping):
            assert key[Attribute.SENSITIVE] is True
            assert key[Attribute.EXTRACTABLE] is False
            assert key[Attribute.TOKEN] is True
            with pytest.raises(pkcs11.exceptions.AttributeSensitive):
                key[Attribute.VALUE]


def test_mldsa_seed_never_rests_in_the_clear(
    provider: PKCS11KeyProvider, softhsm: SoftHSMStore, key_dir: Path
) -> None:
    name = _unique("release")
    provider.generate_signing_key(name)
    blob = os.urandom(64)
    provider.store_secret(_unique("ckks"), KeyPurpose.CKKS_SECRET, blob)
    seed = provider.records.open(name, KeyPurpose.SIGNING)
    assert len(seed) == 32
    needles = [seed, seed.hex().encode(), base64.b64encode(seed)]
    stored = [p for root in (key_dir, softhsm.token_dir) for p in root.rglob("*") if p.is_file()]
    assert any(p.parent == key_dir for p in stored)
    assert any(softhsm.token_dir in p.parents for p in stored)
    for path in stored:
        content = path.read_bytes()
        for needle in needles:
            assert needle not in content, f"ML-DSA seed found in clear in {path}"
        assert blob not in content


def test_secret_blobs_round_trip(provider: PKCS11KeyProvider) -> None:
    name = _unique("ckks")
    blob = os.urandom(1 << 20)
    provider.store_secret(name, KeyPurpose.CKKS_SECRET, blob)
    assert provider.load_secret(name, KeyPurpose.CKKS_SECRET) == blob
    kem_name = _unique("recipient")
    kem_public = provider.generate_kem_key(kem_name)
    assert provider.kem_private_key(kem_name).public_key() == kem_public


def test_tampered_or_moved_records_are_rejected(provider: PKCS11KeyProvider) -> None:
    name = _unique("release")
    provider.generate_signing_key(name)
    path = provider.records.directory.record_path(name, KeyPurpose.SIGNING)
    original = path.read_bytes()
    for position in range(0, len(original), 7):
        tampered = bytearray(original)
        tampered[position] ^= 0x80
        path.write_bytes(bytes(tampered))
        with pytest.raises(KeyIntegrityError):
            provider.signer(name)
    path.write_bytes(original)
    provider.signer(name)

    other = _unique("release")
    provider.generate_signing_key(other)
    target = provider.records.directory.record_path(other, KeyPurpose.SIGNING)
    target.write_bytes(original)
    with pytest.raises(KeyIntegrityError, match="renamed or copied"):
        provider.signer(other)


def test_replaced_token_key_is_detected(
    provider: PKCS11KeyProvider, softhsm_token: SoftHSMToken
) -> None:
    name = _unique("release")
    provider.generate_signing_key(name)
    label = SIGNING_LABEL_PREFIX + name
    with _token_session(softhsm_token) as session:
        for object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
            session.get_key(object_class=object_class, label=label).destroy()
        with pytest.raises(KeyNotFoundError, match="no Ed25519 key"):
            provider.signer(name)
        session.generate_keypair(
            KeyType.EC_EDWARDS,
            mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
            store=True,
            label=label,
            public_template={Attribute.EC_PARAMS: ED25519_EC_PARAMS},
        )
    with pytest.raises(KeyIntegrityError, match="not the one"):
        provider.signer(name)
    with pytest.raises(KeyExistsError):
        provider.generate_signing_key(name)


def test_records_of_one_token_do_not_open_on_another(
    provider: PKCS11KeyProvider, softhsm: SoftHSMStore, key_dir: Path
) -> None:
    name = _unique("release")
    provider.generate_signing_key(name)
    other_token = softhsm.token(OTHER_TOKEN)
    with PKCS11KeyProvider(
        other_token.module_path, other_token.label, other_token.user_pin, key_dir
    ) as other:
        with pytest.raises(KeyIntegrityError):
            other.signer(name)
        other.store_secret(_unique("init"), KeyPurpose.GENERIC, b"creates the wrapping key")
        with pytest.raises(KeyIntegrityError, match="could not unwrap"):
            other.signer(name)


@pytest.mark.usefixtures("provider")
def test_login_and_module_errors(softhsm_token: SoftHSMToken, key_dir: Path) -> None:
    with pytest.raises(KeyProviderConfigError, match="different PIN") as wrong_pin:
        PKCS11KeyProvider(softhsm_token.module_path, softhsm_token.label, "00000000", key_dir)
    assert softhsm_token.user_pin not in str(wrong_pin.value)
    with pytest.raises(KeyProviderConfigError, match="TG_PKCS11_TOKEN_LABEL"):
        PKCS11KeyProvider(softhsm_token.module_path, "no-such-token", "1234", key_dir)
    with pytest.raises(KeyProviderUnavailable, match="TG_PKCS11_MODULE"):
        PKCS11KeyProvider("/nonexistent/libpkcs11.so", softhsm_token.label, "1234", key_dir)


def test_wrong_pin_without_an_existing_login(softhsm: SoftHSMStore, key_dir: Path) -> None:
    other_token = softhsm.token(OTHER_TOKEN)
    with pytest.raises(KeyProviderConfigError, match="rejected the user PIN") as wrong_pin:
        PKCS11KeyProvider(other_token.module_path, other_token.label, "00000000", key_dir)
    assert "00000000" not in str(wrong_pin.value)


def test_production_never_generates_implicitly(softhsm_token: SoftHSMToken, key_dir: Path) -> None:
    name = _unique("release")
    with PKCS11KeyProvider(
        softhsm_token.module_path,
        softhsm_token.label,
        softhsm_token.user_pin,
        key_dir,
        production=True,
    ) as production:
        with pytest.raises(KeyProviderProductionError, match="never creates keys implicitly"):
            production.signer_for(name, generate_if_missing=True)
        signer = production.generate_signing_key(name)
        assert production.signer_for(name).public_key() == signer.public_key()


def test_factory_builds_the_pkcs11_provider(softhsm_token: SoftHSMToken, key_dir: Path) -> None:
    environ = {
        "TG_ENVIRONMENT": "production",
        "TG_KEY_PROVIDER": "pkcs11",
        "TG_KEY_DIR": str(key_dir),
        "TG_PKCS11_MODULE": softhsm_token.module_path,
        "TG_PKCS11_TOKEN_LABEL": softhsm_token.label,
        "TG_PKCS11_PIN": softhsm_token.user_pin,
    }
    with key_provider_from_env(environ) as provider:
        assert isinstance(provider, PKCS11KeyProvider)
        assert provider.production is True
        assert softhsm_token.user_pin not in repr(provider)
        name = _unique("release")
        signer = provider.generate_signing_key(name)
        signer.public_key().verify(b"x", provider.signer(name).sign(b"x"))


def test_cli_generates_in_the_token(
    softhsm_token: SoftHSMToken,
    key_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for variable, value in {
        "TG_KEY_PROVIDER": "pkcs11",
        "TG_KEY_DIR": str(key_dir),
        "TG_PKCS11_MODULE": softhsm_token.module_path,
        "TG_PKCS11_TOKEN_LABEL": softhsm_token.label,
        "TG_PKCS11_PIN": softhsm_token.user_pin,
    }.items():
        monkeypatch.setenv(variable, value)
    name = _unique("release")
    parser = argparse.ArgumentParser(prog="tensorguard")
    add_keys_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["keys", "generate", "--name", name, "--json"])
    assert args.handler(args) == 0
    generated = json.loads(capsys.readouterr().out)
    assert generated["provider"] == "pkcs11"
    with PKCS11KeyProvider(
        softhsm_token.module_path, softhsm_token.label, softhsm_token.user_pin, key_dir
    ) as provider:
        assert provider.fingerprint(name) == generated["fingerprint"]


def test_signer_refuses_after_its_provider_is_closed(
    softhsm_token: SoftHSMToken, key_dir: Path
) -> None:
    provider = PKCS11KeyProvider(
        softhsm_token.module_path, softhsm_token.label, softhsm_token.user_pin, key_dir
    )
    signer = provider.generate_signing_key(_unique("release"))
    signer.public_key().verify(b"m", signer.sign(b"m"))
    provider.close()
    provider.close()  # idempotent
    with pytest.raises(TokenError, match="closed"):
        signer.sign(b"m")
