"""The federation's site registry: which client sites exist and where their data is.

A registry file is YAML::

    sites:
      - id: hospital-north            # lowercase letters, digits and '-'
        data_dir: data/hospital-north  # relative paths resolve against this file
        public_key: keys/hospital-north.pub   # the site's composite public key
                                               # (`tensorguard keys show --public-out`)
        max_weight: 300                # most examples the site may weigh in a round
        kem_public_key: keys/hospital-north.kem.pub   # the site's X-Wing public key, for
                                               # the pairwise masks of secure aggregation

``max_weight`` is the coordinator's cap on the weight (example count) a site may
declare: it goes into every round spec, and the aggregator rejects an update whose
weight exceeds it, so a site cannot outweigh the others by claiming more data.
Production requires it for every site.

Without a file, the registry of the demo sites shipped in ``tensorguard/data`` is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorguard.codec import CodecError, load_strict_yaml
from tensorguard.errors import ConfigurationError
from tensorguard.training.dataset import SITE_ID_PATTERN, TRAIN_FILE
from tensorguard.training.demo_data import demo_sites_root
from tensorguard.training.jsonl import read_text_records


class SiteRegistryError(ConfigurationError):
    """The site registry file or a site entry is invalid, or a site is unknown."""


@dataclass(frozen=True)
class SiteRecord:
    """One registered client site."""

    site_id: str
    data_dir: Path
    public_key_path: Path | None = None
    max_weight: float | None = None
    kem_public_key_path: Path | None = None


def validate_site_id(site_id: str) -> str:
    """Return ``site_id`` if it is a valid identifier, else raise."""
    if not SITE_ID_PATTERN.fullmatch(site_id):
        raise SiteRegistryError(
            f"site id {site_id!r} is invalid: use 1-63 lowercase letters, digits or '-', "
            "starting with a letter or digit"
        )
    return site_id


def demo_site_registry() -> dict[str, SiteRecord]:
    """The registry of the shipped demo sites (one per sub-directory)."""
    root = demo_sites_root()
    if not root.is_dir():
        raise SiteRegistryError(
            f"demo site data is missing at {root}; regenerate it with "
            "`python scripts/generate_demo_data.py`"
        )
    return {
        path.name: SiteRecord(
            site_id=validate_site_id(path.name),
            data_dir=path,
            max_weight=float(len(read_text_records(path / TRAIN_FILE))),
        )
        for path in sorted(root.iterdir())
        if path.is_dir()
    }


def _parse_entry(entry: Any, base: Path, registry_path: Path, index: int) -> SiteRecord:
    if not isinstance(entry, dict) or "id" not in entry or "data_dir" not in entry:
        raise SiteRegistryError(
            f"{registry_path}: sites[{index}] must be a mapping with 'id' and 'data_dir'"
        )
    site_id = validate_site_id(str(entry["id"]))
    data_dir = (base / str(entry["data_dir"])).resolve()
    key = entry.get("public_key")
    public_key_path = (base / str(key)).resolve() if key else None
    max_weight = entry.get("max_weight")
    if max_weight is not None and (
        isinstance(max_weight, bool)
        or not isinstance(max_weight, int | float)
        or not math.isfinite(max_weight)
        or max_weight <= 0
    ):
        raise SiteRegistryError(
            f"{registry_path}: sites[{index}] ({site_id}) max_weight must be a positive "
            f"number (the most examples the site may weigh in a round), got {max_weight!r}"
        )
    kem_key = entry.get("kem_public_key")
    return SiteRecord(
        site_id=site_id,
        data_dir=data_dir,
        public_key_path=public_key_path,
        max_weight=float(max_weight) if max_weight is not None else None,
        kem_public_key_path=(base / str(kem_key)).resolve() if kem_key else None,
    )


def load_site_registry(path: Path) -> dict[str, SiteRecord]:
    """Parse a registry file; duplicate or malformed entries are errors."""
    try:
        document = load_strict_yaml(path.read_text(encoding="utf-8"), what=f"site registry {path}")
    except FileNotFoundError:
        raise SiteRegistryError(
            f"site registry {path} does not exist; create it (see tensorguard/sites.py) "
            "or unset TG_SITES_FILE to use the demo sites"
        ) from None
    except CodecError as exc:
        raise SiteRegistryError(f"{exc}; fix the file (each key may appear once)") from None
    entries = document.get("sites") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise SiteRegistryError(f"site registry {path} must contain a non-empty 'sites' list")
    registry: dict[str, SiteRecord] = {}
    for index, entry in enumerate(entries):
        record = _parse_entry(entry, path.parent, path, index)
        if record.site_id in registry:
            raise SiteRegistryError(f"{path}: site {record.site_id!r} is listed twice")
        registry[record.site_id] = record
    return registry


def site_weight_caps(
    registry: dict[str, SiteRecord], default_cap: float | None
) -> dict[str, float]:
    """Each site's weight cap for a round spec: its registry ``max_weight``.

    A site without one gets ``default_cap``; with ``default_cap=None`` (production) a
    missing cap is an error, because the site would otherwise weigh what it declares.
    """
    missing = sorted(site for site, record in registry.items() if record.max_weight is None)
    if missing and default_cap is None:
        raise SiteRegistryError(
            f"site(s) {', '.join(missing)} have no max_weight in the site registry; "
            "production requires a weight cap for every site (add max_weight: <examples> "
            "to each entry of TG_SITES_FILE)"
        )
    return {
        site: record.max_weight if record.max_weight is not None else float(default_cap or 0)
        for site, record in registry.items()
    }


def lookup_site(registry: dict[str, SiteRecord], site_id: str) -> SiteRecord:
    """Return the registered site or raise an error that lists the known ones."""
    try:
        return registry[site_id]
    except KeyError:
        known = ", ".join(sorted(registry)) or "(none)"
        raise SiteRegistryError(
            f"unknown site {site_id!r}; registered sites: {known}. Add it to the site "
            "registry file (TG_SITES_FILE) and let the site sensor pick it up"
        ) from None
