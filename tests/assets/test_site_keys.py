"""Which site keys the aggregator and custodian trust: registry files, and in development
the public keys sites published; never a key vault."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import build_init_resource_context

from tensorguard.crypto import CompositeSigningKey
from tensorguard.federation._errors import FederationError
from tensorguard.keys._names import KeyPurpose
from tensorguard.sites import demo_sites_root
from tensorguard.tgsp._keyfiles import load_verify_key, write_key_file
from tensorguard_assets.site_keys import (
    publish_development_kem_key,
    published_key_path,
    registered_site_keys,
    roster_kem_keys,
    site_kem_key_name,
    site_signer,
)
from tensorguard_resources import SiteRegistry
from tensorguard_resources.keys import KeyVault, party_key_vault


def _registry(tmp_path: Path, entries: dict[str, str | None]) -> SiteRegistry:
    lines = ["sites:"]
    for site_id, key_file in entries.items():
        lines += [f"  - id: {site_id}", f"    data_dir: {demo_sites_root() / 'lab-east'}"]
        if key_file:
            lines.append(f"    public_key: {key_file}")
    path = tmp_path / "sites.yaml"
    path.write_text("\n".join(lines) + "\n")
    return SiteRegistry(sites_file=str(path))


def _site_vault(tmp_path: Path) -> KeyVault:
    vault = party_key_vault("sites", str(tmp_path), {})
    vault.setup_for_execution(build_init_resource_context())
    return vault


def test_registry_key_files_are_authoritative(tmp_path: Path) -> None:
    site_key = CompositeSigningKey.generate()
    write_key_file(tmp_path / "a.pub", site_key.public_key())
    public_dir = tmp_path / "published"
    site_signer(_site_vault(tmp_path), public_dir, "a")  # publishes a different key
    assert published_key_path(public_dir, "a").is_file()
    keys = registered_site_keys(_registry(tmp_path, {"a": "a.pub"}), public_dir, production=False)
    assert keys["a"].fingerprint() == site_key.public_key().fingerprint()


def test_development_trusts_published_keys_and_skips_sites_without_one(tmp_path: Path) -> None:
    public_dir = tmp_path / "published"
    signer = site_signer(_site_vault(tmp_path), public_dir, "a")
    keys = registered_site_keys(
        _registry(tmp_path, {"a": None, "b": None}), public_dir, production=False
    )
    assert list(keys) == ["a"]
    assert keys["a"].fingerprint() == signer.public_key().fingerprint()
    published = load_verify_key(published_key_path(public_dir, "a"))
    assert published.fingerprint() == signer.public_key().fingerprint()


def test_a_published_key_that_changed_is_refused(tmp_path: Path) -> None:
    public_dir = tmp_path / "published"
    site_signer(_site_vault(tmp_path), public_dir, "a")
    other_state = tmp_path / "elsewhere"
    with pytest.raises(FederationError, match="differs from the site's key"):
        site_signer(_site_vault(other_state), public_dir, "a")


def test_production_refuses_a_site_without_a_registered_key(tmp_path: Path) -> None:
    public_dir = tmp_path / "published"
    site_signer(_site_vault(tmp_path), public_dir, "b")  # published, but not registered
    with pytest.raises(FederationError, match="'b' has no public_key"):
        registered_site_keys(_registry(tmp_path, {"b": None}), public_dir, production=True)


def test_kem_keys_come_from_published_files(tmp_path: Path) -> None:
    public_dir = tmp_path / "published"
    registry = _registry(tmp_path, {"a": None, "b": None})
    with pytest.raises(FederationError, match="'a' has no kem_public_key"):
        roster_kem_keys(registry, public_dir, ("a", "b"), production=False)
    vault = _site_vault(tmp_path)
    for site_id in ("a", "b"):
        publish_development_kem_key(vault, public_dir, site_id)
    kem_keys = roster_kem_keys(registry, public_dir, ("a", "b"), production=False)
    expected = vault.provider.kem_private_key(site_kem_key_name("b")).public_key()
    assert kem_keys["b"].fingerprint() == expected.fingerprint()
    assert vault.provider.has_key(site_kem_key_name("a"), KeyPurpose.KEM)
    with pytest.raises(FederationError, match="no kem_public_key"):
        roster_kem_keys(registry, public_dir, ("a", "b"), production=True)
