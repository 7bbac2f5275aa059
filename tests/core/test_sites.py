"""Site registry weight caps: the coordinator, not the site, bounds a site's weight."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.federation._errors import FederationParamsError
from tensorguard.federation._params import FederationParams
from tensorguard.sites import (
    SiteRegistryError,
    demo_site_registry,
    load_site_registry,
    site_weight_caps,
)


def _registry(tmp_path: Path, *entries: str) -> Path:
    path = tmp_path / "sites.yaml"
    path.write_text("sites:\n" + "".join(entries), encoding="utf-8")
    return path


def test_registry_caps_are_read_and_production_requires_one_per_site(tmp_path: Path) -> None:
    path = _registry(
        tmp_path,
        "  - {id: a, data_dir: a, max_weight: 300}\n",
        "  - {id: b, data_dir: b}\n",
    )
    registry = load_site_registry(path)
    assert registry["a"].max_weight == 300.0
    assert site_weight_caps(registry, default_cap=1000.0) == {"a": 300.0, "b": 1000.0}
    with pytest.raises(SiteRegistryError, match="b have no max_weight"):
        site_weight_caps(registry, default_cap=None)


@pytest.mark.parametrize("bad", ["0", "-5", "true", "'300'", ".nan"])
def test_a_bad_max_weight_is_refused(bad: str, tmp_path: Path) -> None:
    path = _registry(tmp_path, f"  - {{id: a, data_dir: a, max_weight: {bad}}}\n")
    with pytest.raises(SiteRegistryError, match="max_weight must be a positive number"):
        load_site_registry(path)


def test_demo_sites_are_capped_at_their_shipped_training_examples() -> None:
    registry = demo_site_registry()
    caps = site_weight_caps(registry, default_cap=None)
    for site, record in registry.items():
        lines = (record.data_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()
        assert caps[site] == float(sum(1 for line in lines if line.strip()))


def test_a_clip_norm_beyond_the_ckks_per_site_bound_is_refused() -> None:
    params = FederationParams()
    bound = params.site_value_bound
    assert params.check_clip_norm(bound) == bound
    with pytest.raises(FederationParamsError, match="could not encode"):
        params.check_clip_norm(bound * 1.01)


def test_dp_noise_needs_headroom_under_the_ckks_bound() -> None:
    """With DP each coordinate also carries noise: the clip norm must leave 7 sigma."""
    params = FederationParams()
    bound = params.site_value_bound
    noise = bound / 10
    assert params.check_clip_norm(bound - 7.01 * noise, noise) == bound - 7.01 * noise
    with pytest.raises(FederationParamsError, match="DP noise std"):
        params.check_clip_norm(bound - 6 * noise, noise)
