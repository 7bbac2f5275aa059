"""Which site keys the aggregator trusts: registry files, and vault keys only in development."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import build_init_resource_context

from tensorguard.crypto import CompositeSigningKey
from tensorguard.federation.errors import FederationError
from tensorguard.sites import demo_sites_root
from tensorguard.tgsp.keyfiles import write_key_file
from tensorguard_assets.federation import registered_site_keys, site_key_name
from tensorguard_resources import SiteRegistry
from tensorguard_resources.keys import KeyVault


def _registry(tmp_path: Path, entries: dict[str, str | None]) -> SiteRegistry:
    lines = ["sites:"]
    for site_id, key_file in entries.items():
        lines += [f"  - id: {site_id}", f"    data_dir: {demo_sites_root() / 'lab-east'}"]
        if key_file:
            lines.append(f"    public_key: {key_file}")
    path = tmp_path / "sites.yaml"
    path.write_text("\n".join(lines) + "\n")
    return SiteRegistry(sites_file=str(path))


def _open_vault(tmp_path: Path) -> KeyVault:
    vault = KeyVault(key_dir=str(tmp_path / "keys"), dev_master_file=str(tmp_path / "master"))
    vault.setup_for_execution(build_init_resource_context())
    return vault


def test_registry_key_files_are_authoritative(tmp_path: Path) -> None:
    site_key = CompositeSigningKey.generate()
    write_key_file(tmp_path / "a.pub", site_key.public_key())
    vault = _open_vault(tmp_path)
    vault.provider.generate_signing_key(site_key_name("a"))  # a different key in the vault
    keys = registered_site_keys(_registry(tmp_path, {"a": "a.pub"}), vault)
    assert keys["a"].fingerprint() == site_key.public_key().fingerprint()


def test_development_uses_vault_keys_and_skips_sites_without_one(tmp_path: Path) -> None:
    vault = _open_vault(tmp_path)
    vault_key = vault.provider.generate_signing_key(site_key_name("a")).public_key()
    keys = registered_site_keys(_registry(tmp_path, {"a": None, "b": None}), vault)
    assert list(keys) == ["a"]
    assert keys["a"].fingerprint() == vault_key.fingerprint()


def test_production_refuses_a_site_without_a_registered_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    monkeypatch.setenv("TG_KEY_MASTER", "m" * 48)
    vault = _open_vault(tmp_path)
    with pytest.raises(FederationError, match="'b' has no public_key"):
        registered_site_keys(_registry(tmp_path, {"b": None}), vault)
