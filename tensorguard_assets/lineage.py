"""Read what an upstream asset recorded: its latest materialisation's metadata.

Assets pass files, not pickled objects: each writes into the artifact store and
records the path and digest in metadata. A downstream asset receives that record as an
input (:mod:`tensorguard_assets.artifact_inputs`), re-checked here
(:func:`verify_recorded_artifact`) before it trusts the files.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    MultiPartitionKey,
)

from tensorguard.digest import sha256_path
from tensorguard.errors import TensorGuardError

CHECK_HISTORY_SCAN = 200

SETUP_ASSETS = frozenset({"base_model", "federation_keys"})
"""Unpartitioned assets every round reads (``setup_job``, ``key_ceremony_job``)."""
SITE_ASSETS = frozenset({"site_dataset", "site_adapter", "site_update"})
"""Round × site assets (``site_training_job``, once per site)."""
STAGE_JOBS: Mapping[str, str] = {
    "base_model": "setup_job",
    "federation_keys": "key_ceremony_job",
    "round_spec": "round_open_job",
    "site_dataset": "site_training_job",
    "site_adapter": "site_training_job",
    "site_update": "site_training_job",
    "aggregated_update": "aggregation_job",
    "seed_reveals": "reveal_job",
    "global_adapter": "decryption_job",
    "pruned_model": "round_release_job",
    "onnx_model": "round_release_job",
    "moai_export": "round_release_job",
    "evaluation_report": "round_release_job",
    "gate_decision": "round_release_job",
    "tgsp_package": "round_release_job",
    "release": "round_release_job",
}
"""The job (stage of a round, tensorguard_assets.jobs) that materialises each round asset."""
STAGE_ORDER = (
    "setup_job",
    "key_ceremony_job",
    "round_open_job",
    "site_training_job",
    "aggregation_job",
    "reveal_job",
    "decryption_job",
    "round_release_job",
)


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


def verify_recorded_artifact(asset_name: str, metadata: Mapping[str, Any]) -> Path:
    """The artifact path a materialisation of ``asset_name`` recorded, after re-hashing
    it against the recorded SHA-256: a missing or changed artifact fails closed, naming
    the fix (re-materialise the asset)."""
    if "path" not in metadata:
        raise Failure(
            description=(
                f"the latest materialisation of {asset_name} recorded no artifact path; "
                f"re-materialise {asset_name}"
            ),
            allow_retries=False,
        )
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
    return path


def base_model_for_adapter(base_model_dir: Path, base_model_digest: str, adapter_dir: Path) -> Path:
    """The base model directory an adapter names (``base-model@sha256:<digest>`` in its
    config): ``base_model_dir``, the verified ``base_model`` artifact, provided its
    recorded digest is the one the adapter names. Anything else fails closed."""
    from tensorguard.hf import adapter_base_model_digest, read_adapter_config  # needs peft

    try:
        named = adapter_base_model_digest(read_adapter_config(adapter_dir))
    except TensorGuardError as exc:
        raise Failure(description=str(exc), allow_retries=False) from exc
    if named != base_model_digest:
        raise Failure(
            description=(
                f"the adapter in {adapter_dir} names base model "
                f"{named or 'none'}, but the artifact store's base_model is "
                f"{base_model_digest}; re-materialise the round on the current base model"
            ),
            allow_retries=False,
        )
    return base_model_dir


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


def upstream_partitions(
    dependencies: set[str], partition_key: str | MultiPartitionKey | None
) -> dict[str, str | None]:
    """Which partition of each dependency an asset of ``partition_key`` needs.

    Set-up assets are unpartitioned; a round × site asset needs the same key of another
    round × site asset and its round of a round asset; a round asset needs the same round.
    A round asset's round × site dependencies (``site_update`` for the aggregate) are left
    out: how many sites must have delivered is the round's quorum, checked by the asset.
    """
    wanted: dict[str, str | None] = {}
    for name in sorted(dependencies):
        if name in SETUP_ASSETS or partition_key is None:
            wanted[name] = None
        elif isinstance(partition_key, MultiPartitionKey):
            wanted[name] = (
                str(partition_key)
                if name in SITE_ASSETS
                else partition_key.keys_by_dimension["round"]
            )
        elif name not in SITE_ASSETS:
            wanted[name] = partition_key
    return wanted


def missing_upstreams(
    instance: DagsterInstance, wanted: Mapping[str, str | None]
) -> list[tuple[str, str | None]]:
    """The (asset, partition) pairs of ``wanted`` that have no materialisation."""
    return [
        (name, partition)
        for name, partition in wanted.items()
        if latest_materialization_record(instance, name, partition) is None
    ]


def missing_upstream_message(
    label: str, missing: list[tuple[str, str | None]], round_key: str | None
) -> str:
    """Why ``label`` cannot start, naming every missing upstream asset and how to make it:
    the stage job of each, the command that runs the whole round, and the UI action."""
    names = ", ".join(f"{name}[{partition}]" if partition else name for name, partition in missing)
    jobs = sorted({STAGE_JOBS.get(name, name) for name, _ in missing}, key=_stage_rank)
    lines = [
        f"{label} cannot start: {len(missing)} upstream asset"
        f"{'' if len(missing) == 1 else 's'} not materialised: {names}."
    ]
    if round_key:
        lines.append(
            f"Run round {round_key} from a terminal: "
            f".venv/bin/python -m tensorguard_assets.demo --round {round_key} "
            "(`make demo` runs the latest round only)."
        )
        lines.append(
            f"Or in the Dagster UI (Jobs), launch {', then '.join(jobs)} for round {round_key}"
            " (setup_job and key_ceremony_job are unpartitioned; site_training_job once per "
            "site), then launch this asset again."
        )
    else:
        lines.append(
            f"Materialise them first: in the Dagster UI (Jobs), launch {', then '.join(jobs)}."
        )
    return "\n".join(lines)


def _stage_rank(job: str) -> int:
    return STAGE_ORDER.index(job) if job in STAGE_ORDER else len(STAGE_ORDER)


def missing_upstream_failure(
    instance: DagsterInstance,
    reader: str,
    dependencies: set[str],
    partition_key: str | MultiPartitionKey | None,
) -> Failure | None:
    """The failure for ``reader`` (of ``partition_key``) when an upstream asset it reads
    is not materialised for its partition, naming every missing one and how to make it;
    None when all are there."""
    missing = missing_upstreams(instance, upstream_partitions(dependencies, partition_key))
    if not missing:
        return None
    label = reader + (f"[{partition_key}]" if partition_key else "")
    round_key = (
        partition_key.keys_by_dimension["round"]
        if isinstance(partition_key, MultiPartitionKey)
        else partition_key
    )
    return Failure(
        description=missing_upstream_message(label, missing, round_key),
        allow_retries=False,
    )


def require_upstreams(context: AssetExecutionContext) -> None:
    """Fail at once, before any work, when an upstream asset the running asset depends on
    is not materialised for its partition, naming every missing one and how to make it.

    Upstream artifacts that arrive as inputs are checked before the asset body runs
    (:mod:`tensorguard_assets.artifact_inputs`); this covers the dependencies an asset
    reads itself (the round's site updates, asset-check results)."""
    key = context.partition_key if context.has_partition_key else None
    dependencies = {dep.to_user_string() for dep in context.assets_def.dependency_keys}
    failure = missing_upstream_failure(
        context.instance, context.assets_def.node_def.name, dependencies, key
    )
    if failure is not None:
        raise failure
