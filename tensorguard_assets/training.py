"""Training stage: the base model, each site's validated data, each site's LoRA adapter."""
# No "from __future__ import annotations": Dagster resolves config and resource
# parameter types from the runtime annotations. torch, transformers and peft are imported
# inside the asset bodies: every Dagster process imports this module, few train.

import time
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    Config,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from pydantic import Field

from tensorguard.artifact_layout import DATASET_SUMMARY_FILE
from tensorguard.training.dataset import load_site_dataset
from tensorguard.training.errors import DatasetError
from tensorguard_assets import groups
from tensorguard_assets.artifact_checks import (
    integrity_check_spec,
    verify_artifact,
    write_json_artifact,
)
from tensorguard_assets.artifact_inputs import VerifiedArtifact, artifact_ins
from tensorguard_assets.federation import load_round
from tensorguard_assets.metadata import metadata_float, significant, write_line_plot
from tensorguard_assets.partitions import (
    ROUND_OF_SITE,
    round_site_partitions,
    split_round_site,
)
from tensorguard_resources import ArtifactStore, SiteRegistry, fail_closed_on

TRAINING_POOL = "training"
LOSS_CURVE_PNG = "loss_curve.png"
"""The training loss per step, drawn next to the adapter (its path is in the metadata)."""
# Transient failures (a killed worker, a full disk being cleaned) are retried; the
# fail-closed errors raised through ``fail_closed_on`` are not.
TRANSIENT_RETRY = RetryPolicy(max_retries=2, delay=5)


class BaseModelConfig(Config):
    """Where the base model comes from."""

    model_dir: str = Field(
        default="",
        description=(
            "A local Hugging Face model directory (config.json, weights, tokenizer). Empty "
            "builds the project's own small Llama-style model from the shipped corpus."
        ),
    )
    seed: int = Field(default=0, description="Seed for the built-in model's pretraining.")


@asset(
    group_name=groups.SETUP,
    kinds={"pytorch", "huggingface"},
    owners=["team:ml-platform"],
    check_specs=[integrity_check_spec("base_model")],
    pool=TRAINING_POOL,
    retry_policy=TRANSIENT_RETRY,
)
def base_model(
    context: AssetExecutionContext,
    config: BaseModelConfig,
    artifacts: ArtifactStore,
) -> MaterializeResult:
    """The frozen base causal LM that every site adapts: a local HF directory or the built-in
    small Llama-style model (tokenizer and weights trained here on the shipped corpus)."""
    from tensorguard.training.base_model import build_default_base_model, load_base_model_info

    started = time.perf_counter()
    with fail_closed_on(context):
        if config.model_dir:
            info = load_base_model_info(Path(config.model_dir))
            context.log.info(f"Using local base model {info.path}")
        else:
            out_dir = artifacts.asset_dir("base_model") / "model"
            context.log.info(f"Building the built-in base model into {out_dir}")
            info = build_default_base_model(out_dir, seed=config.seed, progress=context.log.info)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(info.path)),
            "digest": MetadataValue.text(info.digest),
            "architecture": MetadataValue.text(info.architecture),
            "model_type": MetadataValue.text(info.model_type),
            "parameter_count": MetadataValue.int(info.parameter_count),
            "vocab_size": MetadataValue.int(info.vocab_size),
            "built_locally": MetadataValue.bool(info.built_locally),
            "seconds": metadata_float(round(time.perf_counter() - started, 2)),
        },
        check_results=[verify_artifact("base_model", info.path, info.digest)],
    )


@asset(
    group_name=groups.TRAIN,
    partitions_def=round_site_partitions,
    kinds={"jsonl"},
    owners=["team:ml-platform"],
    check_specs=[integrity_check_spec("site_dataset")],
)
def site_dataset(
    context: AssetExecutionContext,
    sites: SiteRegistry,
    artifacts: ArtifactStore,
) -> MaterializeResult:
    """One site's training and held-out data for the round: validated, counted and hashed.
    The data stays at the site; only its digest and a summary are recorded."""
    round_key, site_id = split_round_site(context.partition_key)
    with fail_closed_on(context):
        record = sites.site(site_id)
        dataset = load_site_dataset(record.data_dir)
    train_examples, eval_examples = len(dataset.train_texts), len(dataset.eval_texts)
    summary = {
        "round": round_key,
        "site": site_id,
        "data_dir": str(record.data_dir),
        "train_examples": train_examples,
        "eval_examples": eval_examples,
        "digest": dataset.digest,
    }
    summary_path = artifacts.asset_dir("site_dataset", context.partition_key) / DATASET_SUMMARY_FILE
    summary_digest = write_json_artifact(summary_path, summary)
    context.log.info(
        f"{site_id}: {train_examples} train / {eval_examples} eval "
        f"examples, digest {dataset.digest[:16]}…"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(summary_path)),
            "digest": MetadataValue.text(summary_digest),
            "data_digest": MetadataValue.text(dataset.digest),
            "data_dir": MetadataValue.path(str(record.data_dir)),
            "train_examples": MetadataValue.int(train_examples),
            "eval_examples": MetadataValue.int(eval_examples),
        },
        check_results=[verify_artifact("site_dataset", summary_path, summary_digest)],
    )


class SiteAdapterConfig(Config):
    """One site's training budget. The adapter's shape (rank, alpha, dropout, target
    modules) is the round's, taken from the reference adapter in `round_spec`."""

    steps: int = Field(default=60, ge=1, description="Optimiser steps.")
    learning_rate: float = Field(default=3e-3, gt=0.0, description="AdamW learning rate.")
    batch_size: int = Field(default=8, ge=1, description="Training batch size.")
    max_length: int = Field(default=128, ge=8, description="Tokens per example (truncation).")
    seed: int = Field(default=0, ge=0, description="Seed for dropout and data order.")


@asset(
    group_name=groups.TRAIN,
    partitions_def=round_site_partitions,
    ins=artifact_ins("base_model", "site_dataset", round_spec=ROUND_OF_SITE),
    kinds={"pytorch", "peft"},
    owners=["team:ml-platform"],
    check_specs=[integrity_check_spec("site_adapter")],
    pool=TRAINING_POOL,
    retry_policy=TRANSIENT_RETRY,
)
def site_adapter(
    context: AssetExecutionContext,
    config: SiteAdapterConfig,
    sites: SiteRegistry,
    artifacts: ArtifactStore,
    base_model: VerifiedArtifact,
    site_dataset: VerifiedArtifact,
    round_spec: VerifiedArtifact,
) -> MaterializeResult:
    """Real LoRA fine-tuning (peft) of the base model on one site's data, starting from
    the round's reference adapter, with held-out evaluation before and after. Writes
    adapter_config.json + adapter_model.safetensors."""
    from tensorguard.training.lora import (
        TRAINING_SETTINGS_FILE,
        LoRATrainingConfig,
        read_adapter_spec,
        train_site_adapter,
    )

    round_key, site_id = split_round_site(context.partition_key)
    with fail_closed_on(context):
        dataset = load_site_dataset(sites.site(site_id).data_dir)
        if dataset.digest != site_dataset.metadata["data_digest"]:
            raise DatasetError(
                f"the data of site {site_id} in {dataset.site_dir} changed after "
                "site_dataset validated it; re-materialise site_dataset for this partition"
            )
        spec, reference_dir = load_round(round_spec, artifacts)
        shape = read_adapter_spec(reference_dir)
        training_config = LoRATrainingConfig(
            **shape.model_dump(),
            freeze_lora_a=spec.frozen_lora_a,
            steps=config.steps,
            learning_rate=config.learning_rate,
            batch_size=config.batch_size,
            max_length=config.max_length,
            seed=config.seed,
        )
        asset_dir = artifacts.asset_dir("site_adapter", context.partition_key)
        out_dir = asset_dir / "adapter"
        result = train_site_adapter(
            base_model.path,
            dataset,
            training_config,
            out_dir,
            progress=context.log.info,
            initial_adapter_dir=reference_dir,
            base_model_digest=base_model.digest,
        )
        # What decides the adapter's bytes besides the data, for `tensorguard round reproduce`.
        write_json_artifact(
            asset_dir / TRAINING_SETTINGS_FILE, training_config.model_dump(mode="json")
        )
    curve_png = write_line_plot(
        asset_dir / LOSS_CURVE_PNG,
        {"training loss": result.loss_curve},
        title=f"{site_id}, round {round_key}: training loss per step",
        xlabel="optimiser step",
        ylabel="loss",
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(result.adapter_dir)),
            "digest": MetadataValue.text(result.adapter_digest),
            "round": MetadataValue.text(round_key),
            "site": MetadataValue.text(site_id),
            "eval_loss_before": metadata_float(result.eval_loss_before),
            "eval_loss_after": metadata_float(result.eval_loss_after),
            "perplexity_before": metadata_float(result.perplexity_before),
            "perplexity_after": metadata_float(result.perplexity_after),
            "train_examples": MetadataValue.int(result.train_examples),
            "eval_examples": MetadataValue.int(result.eval_examples),
            "steps": MetadataValue.int(result.steps),
            "trainable_parameters": MetadataValue.int(result.trainable_parameters),
            "tokens_per_second": metadata_float(round(result.tokens_per_second, 1)),
            "seconds": metadata_float(round(result.seconds, 2)),
            "loss_curve_png": MetadataValue.path(str(curve_png)),
            "loss_curve": MetadataValue.json(
                {
                    "step": list(range(1, len(result.loss_curve) + 1)),
                    "loss": [significant(loss) for loss in result.loss_curve],
                }
            ),
            "final_train_loss": metadata_float(result.loss_curve[-1]),
        },
        check_results=[verify_artifact("site_adapter", result.adapter_dir, result.adapter_digest)],
    )
