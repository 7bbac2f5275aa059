"""Jobs: the stages a round is launched as (one run per partition shape)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from tensorguard_assets.partitions import round_site_partitions

base_model_job = define_asset_job(
    "base_model_job",
    selection=AssetSelection.assets("base_model"),
    description="Build or load and hash the base model (unpartitioned).",
)

site_training_job = define_asset_job(
    "site_training_job",
    selection=AssetSelection.assets("site_dataset", "site_adapter"),
    partitions_def=round_site_partitions,
    description="One site's round: validate its data and train its LoRA adapter.",
)

ALL_JOBS = [base_model_job, site_training_job]
