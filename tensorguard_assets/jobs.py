"""Jobs: the stages of a round, one run per partition shape.

A round is launched as: ``setup_job`` (base model, federation keys; unpartitioned),
``round_open_job`` (the round's spec and reference adapter), ``site_training_job``
once per site (round × site), then ``round_release_job`` (aggregate, decrypt,
evaluate, derive artifacts, gate, package, publish). ``gpu_export_job`` builds the
TensorRT engine on a GPU machine.
"""

from dagster import AssetSelection, define_asset_job

from tensorguard_assets.partitions import round_partitions, round_site_partitions

setup_job = define_asset_job(
    "setup_job",
    selection=AssetSelection.assets("base_model", "federation_keys"),
    description="Build or load the base model; run the federation key ceremony.",
)

round_open_job = define_asset_job(
    "round_open_job",
    selection=AssetSelection.assets("round_spec"),
    partitions_def=round_partitions,
    description="Open a round: fix its reference adapter and tensor layout.",
)

site_training_job = define_asset_job(
    "site_training_job",
    selection=AssetSelection.assets("site_dataset", "site_adapter", "site_update"),
    partitions_def=round_site_partitions,
    description="One site's round: validate data, train the LoRA adapter, encrypt and sign.",
)

ROUND_RELEASE_ASSETS = (
    "aggregated_update",
    "seed_reveals",
    "global_adapter",
    "pruned_model",
    "onnx_model",
    "moai_export",
    "evaluation_report",
    "gate_decision",
    "tgsp_package",
    "release",
)

round_release_job = define_asset_job(
    "round_release_job",
    selection=AssetSelection.assets(*ROUND_RELEASE_ASSETS),
    partitions_def=round_partitions,
    description="Aggregate the round, decrypt the aggregate, derive and gate the release.",
)

gpu_export_job = define_asset_job(
    "gpu_export_job",
    selection=AssetSelection.assets("tensorrt_engine"),
    partitions_def=round_partitions,
    description="Build the TensorRT engine from the round's ONNX export (needs a GPU).",
)

ALL_JOBS = [setup_job, round_open_job, site_training_job, round_release_job, gpu_export_job]
