"""The documented site registry format and site-id rule are the code's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tensorguard.sites import SiteRegistryError, load_site_registry, validate_site_id
from tensorguard.training.dataset import resolve_site_dir
from tensorguard.training.errors import DatasetError

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _documented_registry() -> str:
    text = (DOCS / "OPERATIONS.md").read_text(encoding="utf-8")
    section = text.split("### Site registry", 1)[1]
    match = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert match is not None, "OPERATIONS.md lost its site registry example"
    return match.group(1)


def test_the_documented_registry_example_parses_with_the_real_loader(tmp_path: Path) -> None:
    registry_file = tmp_path / "sites.yaml"
    registry_file.write_text(_documented_registry(), encoding="utf-8")
    registry = load_site_registry(registry_file)
    assert list(registry) == ["hospital-north", "clinic-south"]
    north = registry["hospital-north"]
    assert north.data_dir == tmp_path / "data" / "hospital-north"
    assert north.public_key_path == tmp_path / "keys" / "hospital-north.pub"
    assert north.kem_public_key_path == tmp_path / "keys" / "hospital-north.kem.pub"
    assert north.max_weight == 300.0


@pytest.mark.parametrize(
    ("site_id", "valid"),
    [
        ("hospital-north", True),
        ("a", True),
        ("9lab", True),
        ("a" * 63, True),
        ("lab_east", False),
        ("Lab", False),
        ("-lab", False),
        ("a" * 64, False),
        ("", False),
    ],
)
def test_registry_and_data_directories_share_one_site_id_rule(
    site_id: str, valid: bool, tmp_path: Path
) -> None:
    if site_id:
        (tmp_path / site_id).mkdir(exist_ok=True)
    if valid:
        assert validate_site_id(site_id) == site_id
        assert resolve_site_dir(tmp_path, site_id) == tmp_path / site_id
        return
    with pytest.raises(SiteRegistryError):
        validate_site_id(site_id)
    with pytest.raises(DatasetError):
        resolve_site_dir(tmp_path, site_id)


def test_data_md_states_the_same_rule() -> None:
    text = " ".join((DOCS / "DATA.md").read_text(encoding="utf-8").split())
    assert "lower-case letters, digits and `-`, starting with a letter or digit" in text
    assert "`-`, `_`" not in text
