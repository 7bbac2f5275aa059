"""key_provider_from_env: provider selection and the refusal for each missing secret."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest

from tensorguard.errors import ProductionGateError
from tensorguard.keys import (
    FileKeyProvider,
    KeyProviderConfigError,
    KeyProviderProductionError,
    KeyProviderSettings,
    KeyProviderUnavailable,
    KeyPurpose,
    WrongMasterKeyError,
    key_provider_from_env,
)
from tensorguard.keys._parties import party_key_dir, state_dir

PKCS11_VARIABLES = ("TG_PKCS11_MODULE", "TG_PKCS11_TOKEN_LABEL", "TG_PKCS11_PIN")


def _production_file_env(key_dir: Path, master: str) -> dict[str, str]:
    return {
        "TG_ENVIRONMENT": "production",
        "TG_KEY_PROVIDER": "file",
        "TG_KEY_DIR": str(key_dir),
        "TG_KEY_MASTER": master,
    }


def test_production_file_provider_with_all_settings(key_dir: Path, master_text: str) -> None:
    provider = key_provider_from_env(_production_file_env(key_dir, master_text))
    assert isinstance(provider, FileKeyProvider)
    assert provider.production is True
    provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"x")
    assert provider.load_secret("ckks", KeyPurpose.CKKS_SECRET) == b"x"


@pytest.mark.parametrize("missing", ["TG_KEY_MASTER", "TG_KEY_DIR"])
def test_production_refuses_each_missing_file_setting(
    key_dir: Path, master_text: str, missing: str
) -> None:
    environ = _production_file_env(key_dir, master_text)
    del environ[missing]
    with pytest.raises(KeyProviderProductionError) as refused:
        key_provider_from_env(environ)
    assert isinstance(refused.value, ProductionGateError)
    message = str(refused.value)
    assert f"{missing} is not set" in message or f"requires {missing}" in message
    assert master_text not in message


@pytest.mark.parametrize("length", [0, 1, 31])
def test_production_refuses_a_short_master(key_dir: Path, length: int) -> None:
    short = secrets.token_urlsafe(32)[:length]
    environ = _production_file_env(key_dir, short)
    with pytest.raises(KeyProviderProductionError, match="TG_KEY_MASTER") as refused:
        key_provider_from_env(environ)
    if length > 8:
        assert short not in str(refused.value)


def test_development_refuses_a_short_master_too(key_dir: Path) -> None:
    environ = {"TG_KEY_DIR": str(key_dir), "TG_KEY_MASTER": "x" * 31}
    with pytest.raises(KeyProviderConfigError, match="shorter than 32 characters"):
        key_provider_from_env(environ)
    environ["TG_KEY_MASTER"] = "x" * 32
    assert isinstance(key_provider_from_env(environ), FileKeyProvider)


def test_production_never_uses_a_throwaway_master(key_dir: Path) -> None:
    environ = {
        "TG_ENVIRONMENT": "production",
        "TG_KEY_DIR": str(key_dir),
        "TG_ALLOW_EPHEMERAL_KEYS": "true",
    }
    with pytest.raises(KeyProviderProductionError, match="throwaway keys are never used"):
        key_provider_from_env(environ)
    with pytest.raises(KeyProviderProductionError, match="TG_KEY_MASTER"):
        key_provider_from_env(environ, allow_ephemeral=True)


def test_development_throwaway_master_needs_the_flag_and_says_so(
    key_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    environ = {"TG_KEY_DIR": str(key_dir)}
    with pytest.raises(KeyProviderConfigError, match="TG_ALLOW_EPHEMERAL_KEYS=true"):
        key_provider_from_env(environ)
    environ["TG_ALLOW_EPHEMERAL_KEYS"] = "true"
    with caplog.at_level(logging.WARNING, logger="tensorguard.keys"):
        provider = key_provider_from_env(environ)
    assert "THROWAWAY master secret" in caplog.text
    provider.store_secret("scratch", KeyPurpose.GENERIC, b"dev data")
    assert provider.load_secret("scratch", KeyPurpose.GENERIC) == b"dev data"
    with pytest.raises(WrongMasterKeyError):
        key_provider_from_env(environ).load_secret("scratch", KeyPurpose.GENERIC)


@pytest.mark.parametrize("missing", PKCS11_VARIABLES)
def test_production_refuses_each_missing_pkcs11_setting(key_dir: Path, missing: str) -> None:
    environ = {
        "TG_ENVIRONMENT": "production",
        "TG_KEY_PROVIDER": "pkcs11",
        "TG_KEY_DIR": str(key_dir),
        "TG_PKCS11_MODULE": "/usr/lib/softhsm/libsofthsm2.so",
        "TG_PKCS11_TOKEN_LABEL": "tensorguard",
        "TG_PKCS11_PIN": "pin-value-123456",
    }
    del environ[missing]
    with pytest.raises(KeyProviderProductionError) as refused:
        key_provider_from_env(environ)
    message = str(refused.value)
    assert f"{missing} is not set" in message
    for other in set(PKCS11_VARIABLES) - {missing}:
        assert f"{other} is not set" not in message
    assert "pin-value-123456" not in message


def test_every_missing_setting_is_reported_at_once() -> None:
    environ = {"TG_ENVIRONMENT": "production", "TG_KEY_PROVIDER": "pkcs11"}
    with pytest.raises(KeyProviderProductionError) as refused:
        key_provider_from_env(environ)
    for variable in ("TG_KEY_DIR", *PKCS11_VARIABLES):
        assert f"{variable} is not set" in str(refused.value)


def test_development_pkcs11_settings_are_still_required(key_dir: Path) -> None:
    environ = {"TG_KEY_PROVIDER": "pkcs11", "TG_KEY_DIR": str(key_dir)}
    with pytest.raises(KeyProviderConfigError) as refused:
        key_provider_from_env(environ)
    assert not isinstance(refused.value, ProductionGateError)
    assert "TG_PKCS11_PIN is not set" in str(refused.value)


def test_unknown_provider_is_refused(key_dir: Path) -> None:
    with pytest.raises(KeyProviderConfigError, match="file, pkcs11"):
        key_provider_from_env({"TG_KEY_PROVIDER": "vault", "TG_KEY_DIR": str(key_dir)})


def test_kms_is_an_explicit_refusal() -> None:
    for environment in ("development", "production"):
        with pytest.raises(KeyProviderUnavailable, match="TG_KEY_PROVIDER=pkcs11") as refused:
            key_provider_from_env({"TG_ENVIRONMENT": environment, "TG_KEY_PROVIDER": "kms"})
        assert "not supported" in str(refused.value)
        with pytest.raises(KeyProviderUnavailable, match="not supported"):
            KeyProviderSettings.from_env({"TG_ENVIRONMENT": environment, "TG_KEY_PROVIDER": "KMS"})


def test_kms_provider_class_is_not_exported() -> None:
    import tensorguard.keys

    assert not hasattr(tensorguard.keys, "KMSKeyProvider")
    assert "kms" not in tensorguard.keys._factory.PROVIDER_KINDS


def test_development_default_key_dir_is_the_state_keys_dir(
    tmp_path: Path, master_text: str
) -> None:
    """One default for the CLI and the pipeline: ``<state>/keys``, whose ``<party>``
    sub-directories are the pipeline's vaults."""
    settings = KeyProviderSettings.from_env({"TG_KEY_MASTER": master_text})
    assert settings.key_dir == Path(".tensorguard") / "keys"
    assert settings.provider == "file"
    moved = {
        "TG_ARTIFACT_ROOT": str(tmp_path / "state" / "artifacts"),
        "TG_KEY_MASTER": master_text,
    }
    key_dir = KeyProviderSettings.from_env(moved).key_dir
    assert key_dir == tmp_path / "state" / "keys"
    assert party_key_dir("release", state_dir(moved), moved) == str(key_dir / "release")


def test_settings_repr_hides_the_pin(key_dir: Path) -> None:
    settings = KeyProviderSettings.from_env(
        {
            "TG_KEY_PROVIDER": "pkcs11",
            "TG_KEY_DIR": str(key_dir),
            "TG_PKCS11_MODULE": "/m.so",
            "TG_PKCS11_TOKEN_LABEL": "t",
            "TG_PKCS11_PIN": "secret-pin-987654",
        }
    )
    assert settings.pkcs11_pin == "secret-pin-987654"
    assert "secret-pin-987654" not in repr(settings)
