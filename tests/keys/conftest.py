"""Fixtures for the key-provider tests: a real SoftHSM2 token store and file-provider setup."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorguard.keys import FileKeyProvider, MasterSecret
from tests.services.softhsm import SoftHSMStore, SoftHSMToken, running_softhsm

PRIMARY_TOKEN = "tg-keys-primary"
OTHER_TOKEN = "tg-keys-other"


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHSMStore]:
    """A SoftHSM2 token directory with two initialised tokens, for the whole session."""
    with running_softhsm(tmp_path_factory.mktemp("softhsm"), [PRIMARY_TOKEN, OTHER_TOKEN]) as store:
        yield store


@pytest.fixture(scope="session")
def softhsm_token(softhsm: SoftHSMStore) -> SoftHSMToken:
    """The token most PKCS#11 tests use."""
    return softhsm.token(PRIMARY_TOKEN)


@pytest.fixture
def master_text() -> str:
    """A fresh, valid TG_KEY_MASTER value."""
    return secrets.token_urlsafe(48)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """Where a test's key records go (created by the provider)."""
    return tmp_path / "keys"


@pytest.fixture
def file_provider(key_dir: Path, master_text: str) -> FileKeyProvider:
    """A development-mode file provider under a fresh master."""
    return FileKeyProvider(
        key_dir, MasterSecret.from_text(master_text, production=False), production=False
    )
