"""Which coordinator key verifies round specs: pinned in production, published in dev."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.crypto import CompositeSigningKey
from tensorguard.federation._errors import FederationError
from tensorguard.tgsp._keyfiles import write_key_file
from tensorguard_assets.coordinator import (
    COORDINATOR_PUBLIC_KEY_ENV,
    PUBLISHED_COORDINATOR_KEY,
    coordinator_key,
)


def test_production_trusts_only_the_pinned_coordinator_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published = CompositeSigningKey.generate().public_key()
    write_key_file(tmp_path / PUBLISHED_COORDINATOR_KEY, published)
    assert coordinator_key(tmp_path, production=False) == published
    with pytest.raises(FederationError, match=COORDINATOR_PUBLIC_KEY_ENV):
        coordinator_key(tmp_path, production=True)

    pinned = CompositeSigningKey.generate().public_key()
    write_key_file(tmp_path / "pinned.pub", pinned)
    monkeypatch.setenv(COORDINATOR_PUBLIC_KEY_ENV, str(tmp_path / "pinned.pub"))
    assert coordinator_key(tmp_path, production=True) == pinned
    assert coordinator_key(tmp_path, production=False) == pinned


def test_development_without_an_opened_round_says_how_to_get_a_key(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="open a round first"):
        coordinator_key(tmp_path, production=False)
