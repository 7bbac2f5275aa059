"""GCM IVs of the PKCS#11 wrapping: the IV the token actually used is recorded with its
source; SoftHSM2 2.6 does not generate IVs, so it exercises the explicit host fallback
(``auto``) and the refusal (``token``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorguard.keys import (
    KeyNotFoundError,
    KeyProviderConfigError,
    KeyPurpose,
    PKCS11KeyProvider,
    TokenError,
    key_provider_from_env,
)
from tensorguard.keys._record import b64decode, parse_record
from tests.services.softhsm import SoftHSMToken


def _provider(token: SoftHSMToken, key_dir: Path, gcm_iv: str) -> PKCS11KeyProvider:
    return PKCS11KeyProvider(
        token.module_path, token.label, token.user_pin, key_dir, production=False, gcm_iv=gcm_iv
    )


@pytest.fixture
def auto_provider(softhsm_token: SoftHSMToken, key_dir: Path) -> Iterator[PKCS11KeyProvider]:
    with _provider(softhsm_token, key_dir, "auto") as opened:
        yield opened


def _seal(provider: PKCS11KeyProvider, name: str, purpose: KeyPurpose) -> dict[str, object]:
    path = provider.records.directory.record_path(name, purpose)
    return dict(parse_record(path.read_bytes()).header.seal)


def test_auto_records_the_iv_used_and_its_source(auto_provider: PKCS11KeyProvider) -> None:
    names = [f"blob-{os.urandom(4).hex()}" for _ in range(3)]
    nonces = set()
    for name in names:
        auto_provider.store_secret(name, KeyPurpose.CKKS_SECRET, name.encode())
        seal = _seal(auto_provider, name, KeyPurpose.CKKS_SECRET)
        assert seal["wrap_iv_source"] == "host"  # SoftHSM2 uses the caller's IV
        nonce = b64decode(str(seal["wrap_nonce"]), "wrap_nonce")
        assert len(nonce) == 12
        nonces.add(nonce)
        assert auto_provider.load_secret(name, KeyPurpose.CKKS_SECRET) == name.encode()
    assert len(nonces) == len(names), "every wrap uses a fresh IV"


def test_token_policy_refuses_a_token_that_takes_caller_ivs(
    softhsm_token: SoftHSMToken, key_dir: Path
) -> None:
    name = f"blob-{os.urandom(4).hex()}"
    with _provider(softhsm_token, key_dir, "token") as provider:
        with pytest.raises(TokenError, match="TG_PKCS11_GCM_IV=token"):
            provider.store_secret(name, KeyPurpose.CKKS_SECRET, b"secret")
        with pytest.raises(KeyNotFoundError):
            provider.load_secret(name, KeyPurpose.CKKS_SECRET)


def test_unknown_policy_is_a_configuration_error(
    softhsm_token: SoftHSMToken, key_dir: Path
) -> None:
    with pytest.raises(KeyProviderConfigError, match="not a GCM IV policy"):
        _provider(softhsm_token, key_dir, "caller")
    environ = {
        "TG_KEY_PROVIDER": "pkcs11",
        "TG_KEY_DIR": str(key_dir),
        "TG_PKCS11_MODULE": softhsm_token.module_path,
        "TG_PKCS11_TOKEN_LABEL": softhsm_token.label,
        "TG_PKCS11_PIN": softhsm_token.user_pin,
        "TG_PKCS11_GCM_IV": "Token",
    }
    with key_provider_from_env(environ) as provider, pytest.raises(TokenError):
        provider.store_secret(f"blob-{os.urandom(4).hex()}", KeyPurpose.CKKS_SECRET, b"s")
