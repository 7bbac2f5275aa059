"""The artifact store is a file system every worker mounts; other schemes are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorguard.errors import ConfigurationError
from tensorguard_assets.resources import build_resources
from tensorguard_resources import ArtifactStore, TensorGuardRuntime


@pytest.mark.parametrize(
    "uri", ["s3://tensorguard/artifacts", "gs://tensorguard/artifacts", "https://store/a"]
)
def test_non_file_schemes_are_refused(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = build_resources({"TG_ARTIFACT_ROOT": uri})["artifacts"]
    scheme = uri.split(":", 1)[0]
    with pytest.raises(ConfigurationError, match=f"scheme '{scheme}' is not supported"):
        _ = store.root
    with pytest.raises(ConfigurationError, match="TG_ARTIFACT_ROOT"):
        store.asset_dir("global_adapter", "2026-11-20")
    assert list(tmp_path.iterdir()) == []


def test_file_uri_and_plain_path_name_the_same_root(tmp_path: Path) -> None:
    shared = tmp_path / "shared-volume" / "artifacts"
    by_uri = ArtifactStore(base_uri=shared.as_uri(), runtime=TensorGuardRuntime())
    by_path = ArtifactStore(base_uri=str(shared), runtime=TensorGuardRuntime())
    assert by_uri.root == by_path.root == shared
    made = by_uri.asset_dir("site_update", "2026-11-20|clinic-south")
    assert made == shared / "site_update" / "2026-11-20__clinic-south"
    assert made.is_dir()
