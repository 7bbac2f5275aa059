"""How the code location under test is configured: its site registry and round cadence.

The registry holds the demo sites plus a probe site with its own data; the UI test
materialises the probe site's partition and compares the metadata it shows with the
probe site's file.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from tensorguard.sites import demo_site_registry
from tensorguard_assets.partitions import DEFAULT_ROUND_START

ROUND_CADENCE = "daily"
PROBE_SITE_ID = "ui-probe"
# The probe site holds a prefix of a demo site's training data, so its example count
# differs from every demo site's and a value read from the wrong partition shows up.
PROBE_TRAIN_RECORDS = 137


@dataclass(frozen=True)
class ProbeSite:
    """The registry file the UI serves and the probe site's training file."""

    sites_file: Path
    site_ids: list[str]
    probe_id: str
    probe_train_file: Path

    def train_records(self) -> int:
        """Records in the probe site's train.jsonl (one per non-blank line)."""
        lines = self.probe_train_file.read_text(encoding="utf-8").splitlines()
        return sum(1 for line in lines if line.strip())


def write_probe_site(root: Path) -> ProbeSite:
    """Write the probe site's data and a registry of it and the demo sites under ``root``."""
    demo = demo_site_registry()
    source = demo[sorted(demo)[0]].data_dir
    probe_dir = root / PROBE_SITE_ID
    probe_dir.mkdir(parents=True)
    train_lines = (source / "train.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (probe_dir / "train.jsonl").write_text(
        "".join(train_lines[:PROBE_TRAIN_RECORDS]), encoding="utf-8"
    )
    shutil.copyfile(source / "eval.jsonl", probe_dir / "eval.jsonl")
    entries = [
        {"id": site_id, "data_dir": str(record.data_dir)} for site_id, record in demo.items()
    ]
    entries.append({"id": PROBE_SITE_ID, "data_dir": str(probe_dir)})
    sites_file = root / "sites.yaml"
    sites_file.write_text(yaml.safe_dump({"sites": entries}), encoding="utf-8")
    return ProbeSite(
        sites_file=sites_file,
        site_ids=sorted(entry["id"] for entry in entries),
        probe_id=PROBE_SITE_ID,
        probe_train_file=probe_dir / "train.jsonl",
    )


def location_env(probe: ProbeSite, artifact_root: Path) -> dict[str, str]:
    """``TG_*`` settings of the served code location (added to the services' environment)."""
    return {
        "TG_ARTIFACT_ROOT": str(artifact_root),
        "TG_SITES_FILE": str(probe.sites_file),
        "TG_ROUND_CADENCE": ROUND_CADENCE,
        "TG_ROUND_START": DEFAULT_ROUND_START,
    }
