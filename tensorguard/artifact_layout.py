"""Where a partitioned artifact lives in the artifact store: one rule for every reader.

The store (``TG_ARTIFACT_ROOT``) holds one directory per asset and, for partitioned
assets, one sub-directory per partition key, whose name is the key with ``|`` (the
separator of multi-partition keys) written ``__`` and every other character outside
``[A-Za-z0-9._=-]`` written ``_``. The pipeline's artifact store resource and
``tensorguard round reproduce`` both use :func:`partition_dir`.
"""

from __future__ import annotations

import re
from pathlib import Path

_UNSAFE_SEGMENT = re.compile(r"[^A-Za-z0-9._=-]")


def partition_segment(partition_key: str) -> str:
    """The directory name of a partition key."""
    return _UNSAFE_SEGMENT.sub("_", partition_key.replace("|", "__"))


def partition_dir(root: Path, asset_name: str, partition_key: str | None = None) -> Path:
    """The directory of one asset (and partition) under the store's ``root``."""
    path = root / asset_name
    return path / partition_segment(partition_key) if partition_key else path


ROUND_SPEC_FILE = "round_spec.json"
"""In ``round_spec/<round>/``: the coordinator-signed round spec (beside ``reference/``)."""
DATASET_SUMMARY_FILE = "summary.json"
"""In ``site_dataset/<round|site>/``: the site's data dir, counts and data digest."""
ENVELOPE_FILE = "update.tgenv"
"""In ``site_update/<round|site>/``: the site's signed, encrypted envelope."""
AGGREGATE_FILE = "aggregate.tgagg"
"""In ``aggregated_update/<round>/``: the aggregator's result."""
CUSTODIAN_LEDGER = Path("custodian") / "decryption-ledger.jsonl"
"""Under the root: the custodian's signed decryption ledger."""
PUBLISHED_COORDINATOR_KEY = Path("coordinator.pub")
"""Under the root, in development: the coordinator's published public key."""
SITE_PUBLIC_KEYS_DIR = Path("site-public-keys")
"""Under the root, in development: the public keys each site published."""
