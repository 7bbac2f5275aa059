"""Each party's key directory and environment, and the development master file, on real
files (#18 item 6: the mutation runs on keys/_parties.py and _development.py found
these unchecked)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tensorguard.durable import DestinationExistsError
from tensorguard.keys import (
    KeyProviderProductionError,
    development_master,
    development_master_file,
    party_environ,
    party_key_dir,
)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "state/keys/custodian"),
        ({"TG_KEY_DIR": ""}, "state/keys/custodian"),
        ({"TG_KEY_DIR": "/srv/keys"}, "/srv/keys/custodian"),
        ({"TG_KEY_DIR": "/srv/keys", "TG_KEY_DIR_CUSTODIAN": "/vault/c"}, "/vault/c"),
        ({"TG_KEY_DIR_CUSTODIAN": "/vault/c"}, "/vault/c"),
        ({"TG_KEY_DIR_CUSTODIAN": "", "TG_KEY_DIR": "/srv/keys"}, "/srv/keys/custodian"),
        ({"TG_KEY_DIR_RELEASE": "/vault/r"}, "state/keys/custodian"),
    ],
)
def test_a_partys_key_directory_follows_the_documented_order(
    environ: dict[str, str], expected: str
) -> None:
    assert party_key_dir("custodian", "state", environ) == expected


def test_an_unknown_party_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown key party 'aggregator'"):
        party_key_dir("aggregator", "state", {})


def test_the_development_master_file_of_a_party() -> None:
    assert development_master_file("sites", "/srv/state") == "/srv/state/dev-secrets/sites_master"


def test_a_partys_environment_has_its_own_directory_master_and_token() -> None:
    shared = {
        "TG_KEY_PROVIDER": "pkcs11",
        "TG_KEY_DIR": "/srv/keys",
        "TG_KEY_MASTER": "shared-master-meant-for-nobody-in-particular",
        "TG_KEY_MASTER_RELEASE": "release-own-master-value-0123456789",
        "TG_PKCS11_TOKEN_LABEL": "shared-token",
        "TG_PKCS11_TOKEN_LABEL_RELEASE": "release-token",
        "TG_PKCS11_PIN": "shared-pin",
        "TG_PKCS11_PIN_RELEASE": "release-pin",
        "TG_PKCS11_WRAP_KEY_LABEL": "shared-wrap",
        "TG_PKCS11_WRAP_KEY_LABEL_RELEASE": "release-wrap",
        "TG_PKCS11_PIN_SITES": "sites-pin",
    }
    before = dict(shared)
    own = party_environ(shared, "release", "/vault/release")
    assert own == {
        **shared,
        "TG_KEY_DIR": "/vault/release",
        "TG_KEY_MASTER": "release-own-master-value-0123456789",
        "TG_PKCS11_TOKEN_LABEL": "release-token",
        "TG_PKCS11_PIN": "release-pin",
        "TG_PKCS11_WRAP_KEY_LABEL": "release-wrap",
    }
    assert shared == before  # the caller's mapping is left alone


def test_a_party_without_its_own_settings_keeps_the_shared_token_but_no_master() -> None:
    shared = {
        "TG_KEY_MASTER": "shared-master-meant-for-nobody-in-particular",
        "TG_PKCS11_TOKEN_LABEL": "shared-token",
        "TG_PKCS11_PIN_SITES": "",
        "TG_KEY_MASTER_SITES": "",
    }
    own = party_environ(shared, "sites", "/vault/sites")
    assert own == {
        "TG_KEY_DIR": "/vault/sites",
        "TG_PKCS11_TOKEN_LABEL": "shared-token",
        "TG_PKCS11_PIN_SITES": "",
        "TG_KEY_MASTER_SITES": "",
    }


def test_a_party_environment_without_any_master() -> None:
    assert party_environ({"TG_KEY_DIR": "/srv/keys"}, "custodian", "/vault/c") == {
        "TG_KEY_DIR": "/vault/c"
    }


def test_the_development_master_is_64_characters_on_one_line_in_a_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "development")
    path = tmp_path / "state" / "dev-secrets" / "sites_master"
    value, created = development_master(path)
    assert created is True
    assert len(value) == 64  # token_urlsafe of 48 random bytes
    assert path.read_bytes() == (value + "\n").encode("ascii")
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert development_master(path) == (value, False)
    other, _ = development_master(tmp_path / "state" / "dev-secrets" / "release_master")
    assert other != value


def test_an_existing_development_master_is_read_and_trimmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TG_ENVIRONMENT", raising=False)
    path = tmp_path / "release_master"
    path.write_text("  kept-master-value-from-an-earlier-run  \n\n", encoding="utf-8")
    assert development_master(path) == ("kept-master-value-from-an-earlier-run", False)


def test_a_new_master_goes_into_an_existing_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "development")
    parent = tmp_path / "dev-secrets"
    parent.mkdir(mode=0o700)
    value, created = development_master(parent / "sites_master")
    assert created
    assert (parent / "sites_master").read_text(encoding="utf-8") == value + "\n"


def test_a_link_at_the_masters_path_is_never_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dangling symbolic link is not a file, so a new master is made, but it is not
    written over the link (the write refuses an existing entry)."""
    monkeypatch.setenv("TG_ENVIRONMENT", "development")
    path = tmp_path / "release_master"
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DestinationExistsError):
        development_master(path)
    assert path.is_symlink()
    assert not (tmp_path / "elsewhere").exists()


def test_production_refuses_a_development_master_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    path = tmp_path / "release_master"
    path.write_text("an-existing-development-master-value\n", encoding="utf-8")
    with pytest.raises(KeyProviderProductionError) as refused:
        development_master(path)
    assert str(refused.value) == (
        "TG_KEY_MASTER is not set: production never uses a development master; set "
        "TG_KEY_MASTER to the hex or base64 encoding of 32 random bytes from your secret "
        "manager, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`"
    )
    assert os.listdir(tmp_path) == ["release_master"]
