"""Key-provider settings read from the environment, field by field and word for word
(#18 item 6: the mutation run on keys/_factory.py found these unchecked).

The PKCS#11 case builds a real provider on the session's SoftHSM2 token.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tensorguard.keys import (
    FileKeyProvider,
    KeyProviderConfigError,
    KeyProviderProductionError,
    KeyProviderSettings,
    KeyProviderUnavailable,
    KeyPurpose,
    key_provider_from_env,
    state_dir,
)
from tensorguard.keys._factory import default_key_dir
from tensorguard.keys._record import parse_record
from tests.services.softhsm import SoftHSMToken

MODULE_HOW_TO = (
    "TG_PKCS11_MODULE is not set: set it to the HSM vendor's PKCS#11 library path "
    "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)"
)
TOKEN_HOW_TO = (
    "TG_PKCS11_TOKEN_LABEL is not set: set it to the label of the token holding "
    "TensorGuard's keys (see `softhsm2-util --show-slots` or your HSM's tools)"
)
PIN_HOW_TO = "TG_PKCS11_PIN is not set: set it to the token's user PIN from your secret manager"
KEY_DIR_HOW_TO = (
    "TG_KEY_DIR is not set: set TG_KEY_DIR to a private directory for sealed key records "
    "(created 0700), e.g. /var/lib/tensorguard/keys on a persistent, backed-up volume"
)


@pytest.mark.parametrize(
    ("artifact_root", "expected"),
    [
        (None, ".tensorguard"),
        ("/srv/tg/artifacts", "/srv/tg"),
        ("/srv/tg/artifacts/", "/srv/tg"),
        ("/srv/tg/artifacts//", "/srv/tg"),
        ("artifacts", ".tensorguard"),
        ("state/artifacts", "state"),
        ("/srv/tg/X", "/srv/tg"),  # only slashes are trimmed
    ],
)
def test_the_state_directory_is_the_one_above_the_artifact_root(
    artifact_root: str | None, expected: str
) -> None:
    environ = {} if artifact_root is None else {"TG_ARTIFACT_ROOT": artifact_root}
    assert state_dir(environ) == expected
    assert default_key_dir(environ) == Path(expected) / "keys"


def test_settings_are_read_from_the_process_environment_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_KEY_PROVIDER", "pkcs11")
    monkeypatch.setenv("TG_KEY_DIR", str(tmp_path))
    for variable, value in {
        "TG_PKCS11_MODULE": "/m.so",
        "TG_PKCS11_TOKEN_LABEL": "t",
        "TG_PKCS11_PIN": "p",
    }.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    settings = KeyProviderSettings.from_env()
    assert (settings.provider, settings.key_dir, settings.production) == (
        "pkcs11",
        tmp_path,
        True,
    )


def test_every_setting_is_taken_from_its_variable(tmp_path: Path) -> None:
    settings = KeyProviderSettings.from_env(
        {
            "TG_KEY_PROVIDER": "  PKCS11 ",
            "TG_KEY_DIR": f"  {tmp_path}  ",
            "TG_PKCS11_MODULE": "/opt/hsm/lib.so",
            "TG_PKCS11_TOKEN_LABEL": "token-a",
            "TG_PKCS11_PIN": "1234-pin",
            "TG_PKCS11_WRAP_KEY_LABEL": "site-wrap",
            "TG_PKCS11_GCM_IV": " Token ",
        }
    )
    assert settings == KeyProviderSettings(
        provider="pkcs11",
        key_dir=tmp_path,
        production=False,
        pkcs11_module="/opt/hsm/lib.so",
        pkcs11_token_label="token-a",
        pkcs11_pin="1234-pin",
        pkcs11_wrap_key_label="site-wrap",
        pkcs11_gcm_iv="token",
    )


def test_unset_and_blank_settings_take_their_defaults() -> None:
    blank = {"TG_KEY_PROVIDER": " ", "TG_PKCS11_GCM_IV": "  ", "TG_PKCS11_WRAP_KEY_LABEL": ""}
    for environ in ({}, blank):
        settings = KeyProviderSettings.from_env(environ)
        assert settings == KeyProviderSettings(
            provider="file",
            key_dir=Path(".tensorguard") / "keys",
            production=False,
            pkcs11_wrap_key_label="tensorguard-wrap",
            pkcs11_gcm_iv="auto",
        )


def test_an_unknown_provider_is_named_with_the_choices(tmp_path: Path) -> None:
    with pytest.raises(KeyProviderConfigError) as refused:
        KeyProviderSettings.from_env({"TG_KEY_PROVIDER": "Vault", "TG_KEY_DIR": str(tmp_path)})
    assert not isinstance(refused.value, KeyProviderProductionError)
    assert str(refused.value) == (
        "key provider settings are incomplete (development mode):\n"
        "  - TG_KEY_PROVIDER='vault' is not a key provider; use one of file, pkcs11"
    )


def test_production_lists_every_problem_in_one_refusal() -> None:
    with pytest.raises(KeyProviderProductionError) as refused:
        KeyProviderSettings.from_env(
            {"TG_ENVIRONMENT": "production", "TG_KEY_PROVIDER": "pkcs11", "TG_KEY_DIR": "  "}
        )
    assert str(refused.value) == (
        "key provider settings are incomplete (TG_ENVIRONMENT=production):\n"
        f"  - {KEY_DIR_HOW_TO}\n  - {MODULE_HOW_TO}\n  - {TOKEN_HOW_TO}\n  - {PIN_HOW_TO}"
    )


def test_development_needs_no_key_dir_but_each_pkcs11_setting() -> None:
    with pytest.raises(KeyProviderConfigError) as refused:
        KeyProviderSettings.from_env({"TG_KEY_PROVIDER": "pkcs11", "TG_PKCS11_TOKEN_LABEL": "t"})
    assert str(refused.value) == (
        "key provider settings are incomplete (development mode):\n"
        f"  - {MODULE_HOW_TO}\n  - {PIN_HOW_TO}"
    )
    assert KeyProviderSettings.from_env({}).key_dir == Path(".tensorguard") / "keys"


def test_production_with_a_key_dir_is_complete(tmp_path: Path) -> None:
    settings = KeyProviderSettings.from_env(
        {"TG_ENVIRONMENT": "production", "TG_KEY_DIR": str(tmp_path)}
    )
    assert (settings.provider, settings.key_dir, settings.production) == ("file", tmp_path, True)


def test_the_file_provider_gets_the_settings_key_dir_master_and_ephemeral_choice(
    tmp_path: Path, master_text: str
) -> None:
    key_dir = tmp_path / "keys"
    environ = {"TG_KEY_DIR": str(key_dir), "TG_KEY_MASTER": master_text}
    provider = key_provider_from_env(environ)
    assert isinstance(provider, FileKeyProvider)
    assert provider.records.directory.path == key_dir
    provider.store_secret("blob", KeyPurpose.GENERIC, b"x")
    assert (key_dir / "blob.generic-secret.tgkey").is_file()
    assert key_provider_from_env(environ).load_secret("blob", KeyPurpose.GENERIC) == b"x"
    throwaway = key_provider_from_env({"TG_KEY_DIR": str(key_dir)}, allow_ephemeral=True)
    assert isinstance(throwaway, FileKeyProvider)
    with pytest.raises(KeyProviderConfigError, match="TG_ALLOW_EPHEMERAL_KEYS=true"):
        key_provider_from_env(
            {"TG_KEY_DIR": str(key_dir), "TG_ALLOW_EPHEMERAL_KEYS": "true"},
            allow_ephemeral=False,
        )


def test_a_missing_python_pkcs11_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the optional package the PKCS#11 provider module cannot be imported."""
    monkeypatch.setitem(sys.modules, "pkcs11", None)
    monkeypatch.delitem(sys.modules, "tensorguard.keys._pkcs11_provider", raising=False)
    environ = {
        "TG_KEY_PROVIDER": "pkcs11",
        "TG_KEY_DIR": str(tmp_path),
        "TG_PKCS11_MODULE": "/m.so",
        "TG_PKCS11_TOKEN_LABEL": "t",
        "TG_PKCS11_PIN": "p",
    }
    with pytest.raises(KeyProviderUnavailable) as refused:
        key_provider_from_env(environ)
    assert str(refused.value) == (
        "TG_KEY_PROVIDER=pkcs11 needs the python-pkcs11 package: "
        "`pip install python-pkcs11==0.10.1`"
    )
    assert refused.value.__cause__ is None
    assert refused.value.__suppress_context__


def test_the_pkcs11_provider_gets_every_setting(
    softhsm_token: SoftHSMToken, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key directory, wrapping-key label and production flag all reach the provider."""
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    key_dir = tmp_path / "keys"
    label = f"wrap-{os.urandom(4).hex()}"
    environ = {
        "TG_KEY_PROVIDER": "pkcs11",
        "TG_KEY_DIR": str(key_dir),
        "TG_PKCS11_MODULE": softhsm_token.module_path,
        "TG_PKCS11_TOKEN_LABEL": softhsm_token.label,
        "TG_PKCS11_PIN": softhsm_token.user_pin,
        "TG_PKCS11_WRAP_KEY_LABEL": label,
    }
    with key_provider_from_env(environ) as provider:
        assert provider.production is False  # the given mapping says development
        name = f"blob-{os.urandom(4).hex()}"
        provider.store_secret(name, KeyPurpose.GENERIC, b"wrapped")
        record = key_dir / f"{name}.generic-secret.tgkey"
        assert parse_record(record.read_bytes()).header.seal["wrapping_key"] == label
        assert provider.load_secret(name, KeyPurpose.GENERIC) == b"wrapped"
