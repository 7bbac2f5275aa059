"""KeyVault in production: no party master means a clear refusal and no file on disk."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import Failure, build_init_resource_context

from tensorguard.production import KEY_PARTIES
from tensorguard_resources.keys import KeyVault


@pytest.mark.parametrize("party", KEY_PARTIES)
def test_production_without_the_party_master_refuses_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, party: str
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    for name in ("TG_KEY_MASTER", f"TG_KEY_MASTER_{party.upper()}", "TG_KEY_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(f"TG_KEY_PROVIDER_{party.upper()}", raising=False)
    vault = KeyVault(
        party=party,
        key_dir=str(tmp_path / "keys" / party),
        dev_master_file=str(tmp_path / "dev-secrets" / f"{party}_master"),
    )
    with pytest.raises(Failure) as failure:
        vault.setup_for_execution(build_init_resource_context())
    message = str(failure.value)
    assert f"TG_KEY_MASTER_{party.upper()} is not set" in message
    assert f"needs the {party} party's own key-encryption master" in message
    assert failure.value.allow_retries is False
    assert not (tmp_path / "dev-secrets").exists()
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
