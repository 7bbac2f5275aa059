"""Upstream artifacts as asset inputs, loaded from what the upstream asset recorded.

Assets pass files, not pickled objects: each writes its artifact into the artifact
store and records the path and digest in its materialisation's metadata (it returns a
``MaterializeResult``, so no IO manager stores a value). A downstream asset declares
the artifacts it reads as parameters, ``def release(context, global_adapter:
VerifiedArtifact, …)`` with ``ins=artifact_ins("global_adapter", …)``, and
:class:`VerifiedArtifactIOManager` loads each one: the upstream asset's latest
materialisation for the partition the input maps to, its artifact re-hashed against the
recorded digest. A missing record fails naming every missing upstream of the reader and
how to make it; a missing or changed artifact fails naming the fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import (
    AssetIn,
    AssetsDefinition,
    AssetSpec,
    ConfigurableIOManagerFactory,
    DagsterInstance,
    Failure,
    InitResourceContext,
    InputContext,
    IOManager,
    MultiPartitionKey,
    OutputContext,
    PartitionMapping,
)

from tensorguard_assets.lineage import (
    SITE_ASSETS,
    latest_materialization_record,
    missing_upstream_failure,
    missing_upstream_message,
    recorded_metadata,
    verify_recorded_artifact,
)
from tensorguard_assets.partitions import round_site_partitions

VERIFIED_ARTIFACTS = "verified_artifacts"
"""The resource key of the input manager every artifact input names."""


@dataclass(frozen=True)
class VerifiedArtifact:
    """An upstream asset's artifact, re-hashed against the digest its materialisation
    recorded, with that materialisation's metadata (plain values)."""

    asset: str
    partition: str | None
    path: Path
    digest: str
    metadata: Mapping[str, Any] = field(repr=False)


def artifact_ins(*names: str, **mapped: PartitionMapping) -> dict[str, AssetIn]:
    """The ``ins`` of an asset reading the artifacts of ``names`` (default partition
    mapping) and of ``mapped`` (asset name → partition mapping), each loaded by
    :class:`VerifiedArtifactIOManager`. Each input is named after its asset."""
    ins = {name: AssetIn(input_manager_key=VERIFIED_ARTIFACTS) for name in names}
    for name, mapping in mapped.items():
        ins[name] = AssetIn(partition_mapping=mapping, input_manager_key=VERIFIED_ARTIFACTS)
    return ins


def with_upstream_specs(
    assets: Iterable[AssetsDefinition], every: Iterable[AssetsDefinition]
) -> list[AssetsDefinition | AssetSpec]:
    """``assets`` and an external :class:`AssetSpec` for each upstream asset they depend
    on but do not define (another code location's, or one left out of a test's run),
    with the partitions of its definition in ``every``, so that an input maps to the
    right partition of it. An upstream that ``every`` does not define is refused.

    Dagster loads an input only from an asset its definitions know; a dependency it
    does not know would otherwise be drawn as an unpartitioned external asset.
    """
    defined = list(assets)
    keys = {key for asset in defined for key in asset.keys}
    upstream = {dep for asset in defined for dep in asset.dependency_keys} - keys
    partitions = {key: asset.partitions_def for asset in every for key in asset.keys}
    unknown = sorted(key.to_user_string() for key in upstream - set(partitions))
    if unknown:
        raise ValueError(f"no definition of the upstream asset(s) {', '.join(unknown)}")
    specs = [AssetSpec(key, partitions_def=partitions[key]) for key in upstream]
    return [*defined, *sorted(specs, key=lambda spec: spec.key.to_user_string())]


class VerifiedArtifactIOManager(IOManager):
    """Loads an upstream artifact as a :class:`VerifiedArtifact` from the Dagster
    instance's record of it; stores nothing (assets return ``MaterializeResult``)."""

    def __init__(self, instance: DagsterInstance) -> None:
        self._instance = instance

    def load_input(self, context: InputContext) -> VerifiedArtifact:
        """The upstream asset's latest materialisation for the input's partition, its
        artifact re-hashed; fails closed when the record or the artifact is missing or
        the artifact changed since it was recorded."""
        asset_name = context.asset_key.to_user_string()
        partition = context.asset_partition_key if context.has_asset_partitions else None
        record = latest_materialization_record(self._instance, context.asset_key, partition)
        if record is None:
            raise self._missing(context, asset_name, partition)
        metadata = recorded_metadata(record)
        path = verify_recorded_artifact(asset_name, metadata)
        return VerifiedArtifact(
            asset=asset_name,
            partition=partition,
            path=path,
            digest=str(metadata["digest"]),
            metadata=metadata,
        )

    def handle_output(self, context: OutputContext, obj: object) -> None:
        """Refused: an asset records its artifact itself and returns ``MaterializeResult``."""
        raise Failure(
            description=(
                f"{context.asset_key.to_user_string()} returned a value "
                f"({type(obj).__name__}) for the {VERIFIED_ARTIFACTS} manager to store; "
                "TensorGuard assets write their artifact into the artifact store and "
                "return a MaterializeResult with its path and digest"
            ),
            allow_retries=False,
        )

    def _missing(self, context: InputContext, asset_name: str, partition: str | None) -> Failure:
        """Why the reading asset cannot start: every upstream asset it depends on (its
        op's inputs, which are named after their assets) that is not materialised."""
        reader = context.op_def.name
        dependencies = {name for name in context.op_def.ins if not name.startswith("__")}
        key: str | MultiPartitionKey | None = (
            context.partition_key if context.has_partition_key else None
        )
        if key is not None and reader in SITE_ASSETS:
            key = round_site_partitions.get_partition_key_from_str(key)
        failure = missing_upstream_failure(self._instance, reader, dependencies, key)
        if failure is not None:
            return failure
        label = reader + (f"[{key}]" if key else "")
        round_key = key.keys_by_dimension["round"] if isinstance(key, MultiPartitionKey) else key
        return Failure(
            description=missing_upstream_message(label, [(asset_name, partition)], round_key),
            allow_retries=False,
        )


class VerifiedArtifacts(ConfigurableIOManagerFactory):
    """Upstream artifacts as asset inputs: each is loaded from the upstream asset's
    latest materialisation (path, digest, metadata) and re-hashed before the asset runs.
    Holds no configuration and no secret."""

    def create_io_manager(self, context: InitResourceContext) -> VerifiedArtifactIOManager:
        """The manager, reading the run's Dagster instance."""
        if context.instance is None:
            raise Failure(
                description=(
                    f"the {VERIFIED_ARTIFACTS} resource needs the run's Dagster instance "
                    "to read upstream materialisations; run the assets through a Dagster "
                    "instance (materialize(..., instance=...) or a job)"
                ),
                allow_retries=False,
            )
        return VerifiedArtifactIOManager(context.instance)
