"""Read what an upstream asset recorded: its latest materialisation's metadata.

Assets pass files, not pickled objects: each writes into the artifact store and
records the path and digest in metadata. A downstream asset looks that record up
here and re-checks the digest before trusting the files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    EventLogRecord,
    Failure,
)

from tensorguard.digest import sha256_path
from tensorguard.errors import TensorGuardError
from tensorguard.hf import adapter_base_model_digest, read_adapter_config

CHECK_HISTORY_SCAN = 200


def latest_materialization_record(
    instance: DagsterInstance, asset: str | AssetKey, partition_key: str | None = None
) -> EventLogRecord | None:
    """The newest materialisation record of ``asset`` (for the partition), if any."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(
            asset_key=asset if isinstance(asset, AssetKey) else AssetKey(asset),
            asset_partitions=[partition_key] if partition_key else None,
        ),
        limit=1,
    ).records
    return records[0] if records and records[0].asset_materialization is not None else None


def recorded_metadata(record: EventLogRecord) -> dict[str, Any]:
    """The plain metadata values of a materialisation record."""
    materialization = record.asset_materialization
    assert materialization is not None
    return {name: value.value for name, value in materialization.metadata.items()}


def require_declared_dependency(context: AssetExecutionContext, asset_name: str) -> AssetKey:
    """The key of ``asset_name``, which the running asset must declare as a dependency.

    Reading an upstream artifact the asset does not declare would hide it from the
    lineage graph (and from what a run materialises first); a misspelt name would only
    fail at run time as "not materialised". Both fail here, naming the fix.
    """
    asset_key = AssetKey(asset_name)
    declared = context.assets_def.dependency_keys
    if asset_key not in declared:
        reader = context.assets_def.node_def.name
        raise Failure(
            description=(
                f"{reader} reads {asset_name} without declaring it as a dependency "
                f"(declared: {', '.join(sorted(k.to_user_string() for k in declared))}); "
                f"add {asset_name!r} to the asset's deps"
            ),
            allow_retries=False,
        )
    return asset_key


def upstream_metadata(
    context: AssetExecutionContext, asset_name: str, partition_key: str | None = None
) -> dict[str, Any]:
    """Metadata values of the latest materialisation of ``asset_name`` (and partition),
    which must be a declared dependency of the running asset."""
    asset_key = require_declared_dependency(context, asset_name)
    record = latest_materialization_record(context.instance, asset_key, partition_key)
    if record is None:
        where = f" for partition {partition_key}" if partition_key else ""
        raise Failure(
            description=(
                f"{asset_name}{where} has not been materialised yet; materialise it first "
                "(or run the whole round with `make demo`)"
            ),
            allow_retries=False,
        )
    return recorded_metadata(record)


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
    actual = sha256_path(path)
    if actual != recorded:
        raise Failure(
            description=(
                f"{asset_name} artifact {path} changed since it was recorded "
                f"(recorded {recorded}, now {actual}); re-materialise {asset_name}"
            ),
            allow_retries=False,
        )
    return path, metadata


def base_model_for_adapter(context: AssetExecutionContext, adapter_dir: Path) -> Path:
    """The base model directory an adapter names (``base-model@sha256:<digest>`` in its
    config), resolved through the artifact store: the ``base_model`` artifact, re-hashed,
    whose recorded digest is the one the adapter names. Anything else fails closed."""
    base_dir, metadata = verified_upstream_path(context, "base_model")
    try:
        named = adapter_base_model_digest(read_adapter_config(adapter_dir))
    except TensorGuardError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    if named != str(metadata.get("digest", "")):
        raise Failure(
            description=(
                f"the adapter in {adapter_dir} names base model "
                f"{named or 'none'}, but the artifact store's base_model is "
                f"{metadata.get('digest')}; re-materialise the round on the current base model"
            ),
            allow_retries=False,
        )
    return base_dir


def latest_check_passed(
    context: AssetExecutionContext, asset_name: str, check_name: str, partition_key: str | None
) -> bool:
    """Whether the check passed on the asset's latest materialisation (of the partition).

    Checks evaluated inside an asset are recorded against the materialisation they
    judged (its storage id); a check result for any other materialisation, or none at
    all, counts as not passed.
    """
    record = latest_materialization_record(context.instance, asset_name, partition_key)
    if record is None:
        return False
    target_storage_id = record.storage_id
    history = context.instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey(asset_name), check_name), limit=CHECK_HISTORY_SCAN
    )
    for execution in history:  # newest first
        event = execution.event.dagster_event if execution.event else None
        evaluation = event.event_specific_data if event else None
        if not isinstance(evaluation, AssetCheckEvaluation):
            continue  # planned, not yet evaluated
        target = evaluation.target_materialization_data
        if target is not None and target.storage_id == target_storage_id:
            return evaluation.passed
    return False
