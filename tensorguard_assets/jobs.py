"""Jobs: the stages of a round, each run by the code location of the party that owns it.

A round goes through these runs, in order (``ROUND_STAGES``; docs/OPERATIONS.md):

1. ``setup_job`` (coordinator: the base model) and ``key_ceremony_job`` (custodian: the
   CKKS key ceremony), both unpartitioned;
2. ``round_open_job`` (coordinator: the signed round spec);
3. ``site_training_job`` once per site (round × site: data, LoRA training, the masked,
   encrypted and signed update);
4. ``aggregation_job`` (aggregator: the homomorphic sum; it holds no secret);
5. ``reveal_job`` (sites: the signed seed reveals for dropped sites);
6. ``decryption_job`` (custodian: verify, then decrypt the aggregate once);
7. ``round_release_job`` (publisher: derive, evaluate, gate, package, publish).

``gpu_export_job`` builds the TensorRT engine on a GPU machine.
"""

from typing import Any

from dagster import AssetSelection, define_asset_job

from tensorguard_assets.partitions import round_partitions, round_site_partitions


def _round_job(name: str, assets: tuple[str, ...], description: str) -> Any:
    """A job materialising ``assets`` for one round partition."""
    return define_asset_job(
        name,
        selection=AssetSelection.assets(*assets),
        partitions_def=round_partitions,
        description=description,
    )


setup_job = define_asset_job(
    "setup_job",
    selection=AssetSelection.assets("base_model"),
    description="Build or load the base model.",
)

key_ceremony_job = define_asset_job(
    "key_ceremony_job",
    selection=AssetSelection.assets("federation_keys"),
    description="The custodian's CKKS key ceremony: publish the public context, seal the secret.",
)

round_open_job = _round_job(
    "round_open_job",
    ("round_spec",),
    "Open a round: sign its rules, fix its reference adapter and tensor layout.",
)

site_training_job = define_asset_job(
    "site_training_job",
    selection=AssetSelection.assets("site_dataset", "site_adapter", "site_update"),
    partitions_def=round_site_partitions,
    description="One site's round: validate data, train the LoRA adapter, mask, encrypt, sign.",
)

aggregation_job = _round_job(
    "aggregation_job",
    ("aggregated_update",),
    "Aggregate a round's signed, encrypted site updates (no secret needed).",
)

reveal_job = _round_job(
    "reveal_job",
    ("seed_reveals",),
    "Each surviving site reveals, signed, the mask seeds it shared with dropped sites.",
)

decryption_job = _round_job(
    "decryption_job",
    ("global_adapter",),
    "The custodian verifies the aggregate, decrypts it once and builds the adapter.",
)

ROUND_RELEASE_ASSETS = (
    "pruned_model",
    "onnx_model",
    "moai_export",
    "evaluation_report",
    "gate_decision",
    "tgsp_package",
    "release",
)

round_release_job = _round_job(
    "round_release_job",
    ROUND_RELEASE_ASSETS,
    "Derive the deployment artifacts, evaluate, gate, package and publish.",
)

gpu_export_job = _round_job(
    "gpu_export_job",
    ("tensorrt_engine",),
    "Build the TensorRT engine from the round's ONNX export (needs a GPU).",
)
