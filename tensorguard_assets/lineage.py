"""Read what an upstream asset recorded: its latest materialisation's metadata.

Assets pass files, not pickled objects: each writes into the artifact store and
records the path and digest in metadata. A downstream asset looks that record up
here and re-checks the digest before trusting the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import AssetExecutionContext, AssetKey, AssetRecordsFilter, Failure

from tensorguard.digest import sha256_file, sha256_tree


def upstream_metadata(
    context: AssetExecutionContext, asset_name: str, partition_key: str | None = None
) -> dict[str, Any]:
    """Metadata values of the latest materialisation of ``asset_name`` (and partition)."""
    records_filter = AssetRecordsFilter(
        asset_key=AssetKey(asset_name),
        asset_partitions=[partition_key] if partition_key else None,
    )
    records = context.instance.fetch_materializations(records_filter, limit=1).records
    materialization = records[0].asset_materialization if records else None
    if materialization is None:
        where = f" for partition {partition_key}" if partition_key else ""
        raise Failure(
            description=(
                f"{asset_name}{where} has not been materialised yet; materialise it first "
                "(or run the whole round with `make demo`)"
            ),
            allow_retries=False,
        )
    return {name: value.value for name, value in materialization.metadata.items()}


def verified_upstream_path(
    context: AssetExecutionContext, asset_name: str, partition_key: str | None = None
) -> tuple[Path, dict[str, Any]]:
    """The upstream artifact path after re-checking its recorded SHA-256."""
    metadata = upstream_metadata(context, asset_name, partition_key)
    path = Path(str(metadata["path"]))
    recorded = str(metadata.get("digest", ""))
    if not path.exists():
        raise Failure(
            description=f"{asset_name} artifact {path} is missing; re-materialise {asset_name}",
            allow_retries=False,
        )
    actual = sha256_file(path) if path.is_file() else sha256_tree(path)
    if actual != recorded:
        raise Failure(
            description=(
                f"{asset_name} artifact {path} changed since it was recorded "
                f"(recorded {recorded}, now {actual}); re-materialise {asset_name}"
            ),
            allow_retries=False,
        )
    return path, metadata
