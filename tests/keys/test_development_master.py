"""The development master: created once in development, never in production."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tensorguard.keys._development import development_master
from tensorguard.keys._errors import KeyProviderProductionError


def test_development_creates_a_private_master_once_and_reuses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "development")
    path = tmp_path / "dev-secrets" / "release_master"
    value, created = development_master(path)
    assert created
    assert len(value) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert development_master(path) == (value, False)


def test_production_refuses_and_creates_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    path = tmp_path / "dev-secrets" / "release_master"
    with pytest.raises(KeyProviderProductionError, match="never uses a development master"):
        development_master(path)
    assert not path.exists()
    assert not path.parent.exists()
