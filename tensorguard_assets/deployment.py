"""Deployment artifacts derived from the round's global adapter: the 2:4-pruned merged
model, the ONNX export with measured parity, the TensorRT engine (GPU job only) and
the MOAI export for encrypted inference."""
# No "from __future__ import annotations": Dagster resolves config and resource
# parameter types from the runtime annotations.
# torch, transformers, peft, onnx and TenSEAL are imported inside the asset bodies: every
# Dagster process (runs, steps, daemon, webserver) imports this module, few need them.

import time

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from tensorguard.optimize.recovery_settings import RecoverySettings
from tensorguard_assets import groups
from tensorguard_assets.artifact_checks import (
    integrity_check_spec,
    verify_artifact,
    write_json_artifact,
)
from tensorguard_assets.artifact_inputs import VerifiedArtifact, artifact_ins
from tensorguard_assets.lineage import base_model_for_adapter
from tensorguard_assets.metadata import metadata_float
from tensorguard_assets.partitions import round_partitions
from tensorguard_resources import ArtifactStore, SiteRegistry, fail_closed_on

_RECOVERY_DEFAULTS = RecoverySettings()


class PrunedModelConfig(Config):
    """Which Linear layers keep their dense weights, and how long the pruned model is
    recovered (distilled from the dense model on the public corpus, mask fixed)."""

    exclude: list[str] = Field(
        default_factory=lambda: ["lm_head"],
        description="Names (or dotted suffixes) of Linear layers left dense.",
    )
    recovery_steps: int = Field(
        default=_RECOVERY_DEFAULTS.steps,
        ge=0,
        description="Distillation steps after 2:4 pruning (0 ships the one-shot pruned model).",
    )
    recovery_learning_rate: float = Field(
        default=_RECOVERY_DEFAULTS.learning_rate,
        gt=0,
        description="AdamW learning rate of the recovery.",
    )

    def recovery_settings(self) -> RecoverySettings:
        """The core recovery settings these options select."""
        return RecoverySettings(
            steps=self.recovery_steps, learning_rate=self.recovery_learning_rate
        )


@asset(
    group_name=groups.OPTIMIZE,
    partitions_def=round_partitions,
    ins=artifact_ins("global_adapter", "base_model"),
    kinds={"pytorch", "safetensors"},
    owners=["team:ml-platform"],
    check_specs=[
        integrity_check_spec("pruned_model"),
        AssetCheckSpec(
            name="two_four_pattern_exact",
            asset="pruned_model",
            blocking=True,
            description="Reloaded from disk, every group of 4 weights has at least 2 zeros.",
        ),
    ],
)
def pruned_model(
    context: AssetExecutionContext,
    config: PrunedModelConfig,
    artifacts: ArtifactStore,
    sites: SiteRegistry,
    global_adapter: VerifiedArtifact,
    base_model: VerifiedArtifact,
) -> MaterializeResult:
    """The global adapter merged into the base model (merge_and_unload), pruned to an
    exact 2:4 magnitude pattern, then recovered with the mask fixed by distillation from
    the dense merged model on the public corpus (never site data); the held-out loss is
    measured dense, pruned and recovered."""
    from tensorguard.held_out import load_held_out_set
    from tensorguard.hf import CHECKPOINT_DTYPE, load_causal_lm
    from tensorguard.optimize.pruned_model import (
        PRUNING_SETTINGS_FILE,
        build_pruned_model,
        pruning_settings_json,
    )
    from tensorguard.optimize.pruning import verify_2_4

    round_key = context.partition_key
    adapter_dir = global_adapter.path
    base_dir = base_model_for_adapter(base_model.path, base_model.digest, adapter_dir)
    asset_dir = artifacts.asset_dir("pruned_model", round_key)
    out_dir = asset_dir / "model"
    settings = config.recovery_settings()
    with fail_closed_on(context):
        held_out = load_held_out_set(base_dir, {s: r.data_dir for s, r in sites.sites().items()})
        build = build_pruned_model(
            base_dir,
            adapter_dir,
            held_out.token_batches(),
            out_dir,
            settings=settings,
            exclude=tuple(config.exclude),
        )
        write_json_artifact(
            asset_dir / PRUNING_SETTINGS_FILE, pruning_settings_json(settings, config.exclude)
        )
        reloaded = load_causal_lm(out_dir, dtype=CHECKPOINT_DTYPE)
        reloaded_report = verify_2_4(reloaded, tuple(config.exclude))
    outcome, saved, digest = build.outcome, build.saved, build.digest
    report = outcome.recovery.report
    context.log.info(
        f"2:4 pruning: {report.overall_sparsity:.1%} of prunable weights zero; held-out loss "
        f"dense {outcome.eval_loss_dense:.4f} → pruned {outcome.eval_loss_pruned:.4f} → "
        f"recovered {outcome.eval_loss_recovered:.4f} ({outcome.relative_increase:+.1%} vs "
        f"dense; {outcome.recovery.steps} distillation steps on the public corpus in "
        f"{outcome.recovery.seconds:.1f}s)"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "digest": MetadataValue.text(digest),
            "size_bytes": MetadataValue.int(saved.size_bytes),
            "sparsity": metadata_float(report.overall_sparsity),
            "pruned_layers": MetadataValue.int(len(report.layers)),
            "eval_loss_unpruned": metadata_float(round(outcome.eval_loss_dense, 6)),
            "eval_loss_one_shot": metadata_float(round(outcome.eval_loss_pruned, 6)),
            "eval_loss_pruned": metadata_float(round(outcome.eval_loss_recovered, 6)),
            "eval_loss_delta": metadata_float(
                round(outcome.eval_loss_recovered - outcome.eval_loss_dense, 6)
            ),
            "eval_loss_relative_increase": metadata_float(round(outcome.relative_increase, 6)),
            "recovery_steps": MetadataValue.int(outcome.recovery.steps),
            "recovery_seconds": metadata_float(round(outcome.recovery.seconds, 2)),
            "recovery_data": MetadataValue.text("public corpus (tensorguard/data/corpus)"),
        },
        check_results=[
            verify_artifact("pruned_model", out_dir, digest),
            AssetCheckResult(
                asset_key=AssetKey("pruned_model"),
                check_name="two_four_pattern_exact",
                passed=reloaded_report.pattern_exact,
                metadata={
                    "violating_layers": MetadataValue.text(
                        ", ".join(reloaded_report.violating_layers) or "none"
                    ),
                    "sparsity": metadata_float(reloaded_report.overall_sparsity),
                },
            ),
        ],
    )


class OnnxModelConfig(Config):
    """Parity tolerance of the ONNX export."""

    tolerance: float = Field(
        default=1e-4, gt=0, description="Largest allowed |logit(torch) - logit(onnxruntime)|."
    )


@asset(
    group_name=groups.OPTIMIZE,
    partitions_def=round_partitions,
    ins=artifact_ins("global_adapter", "base_model"),
    kinds={"onnx"},
    owners=["team:ml-platform"],
    check_specs=[
        integrity_check_spec("onnx_model"),
        AssetCheckSpec(
            name="onnx_parity",
            asset="onnx_model",
            blocking=True,
            description="onnxruntime logits match torch within the configured tolerance.",
        ),
    ],
)
def onnx_model(
    context: AssetExecutionContext,
    config: OnnxModelConfig,
    artifacts: ArtifactStore,
    global_adapter: VerifiedArtifact,
    base_model: VerifiedArtifact,
) -> MaterializeResult:
    """The merged model exported with torch.onnx.export (dynamo, dynamic batch and
    sequence), checked by onnx.checker and run in onnxruntime against torch."""
    from tensorguard.optimize.merge import merge_adapter
    from tensorguard.optimize.onnx_export import export_causal_lm_to_onnx

    round_key = context.partition_key
    adapter_dir = global_adapter.path
    base_dir = base_model_for_adapter(base_model.path, base_model.digest, adapter_dir)
    out_dir = artifacts.asset_dir("onnx_model", round_key) / "onnx"
    started = time.perf_counter()
    with fail_closed_on(context):
        result = export_causal_lm_to_onnx(merge_adapter(base_dir, adapter_dir), out_dir)
    seconds = time.perf_counter() - started
    context.log.info(
        f"ONNX export: max |Δlogit| {result.max_abs_diff:.2e} (tolerance "
        f"{config.tolerance:.0e}) in {seconds:.1f}s"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "digest": MetadataValue.text(result.sha256),
            "size_bytes": MetadataValue.int(result.size_bytes),
            "opset": MetadataValue.int(result.opset),
            "max_abs_diff": metadata_float(result.max_abs_diff),
            "parity_shapes": MetadataValue.text(str(list(result.parity_shapes))),
            "export_seconds": metadata_float(round(seconds, 2)),
        },
        check_results=[
            verify_artifact("onnx_model", out_dir, result.sha256),
            AssetCheckResult(
                asset_key=AssetKey("onnx_model"),
                check_name="onnx_parity",
                passed=result.within_tolerance(config.tolerance),
                metadata={
                    "max_abs_diff": metadata_float(result.max_abs_diff),
                    "tolerance": metadata_float(config.tolerance),
                },
            ),
        ],
    )


@asset(
    group_name=groups.OPTIMIZE,
    partitions_def=round_partitions,
    ins=artifact_ins("onnx_model"),
    kinds={"tensorrt"},
    owners=["team:ml-platform"],
    check_specs=[integrity_check_spec("tensorrt_engine")],
)
def tensorrt_engine(
    context: AssetExecutionContext,
    artifacts: ArtifactStore,
    onnx_model: VerifiedArtifact,
) -> MaterializeResult:
    """A TensorRT 10 engine built from the ONNX export (FP16 where the GPU supports it).
    Runs only in the `gpu_export` job; without TensorRT or a CUDA device it fails with
    the remediation instead of writing anything."""
    from tensorguard.optimize.tensorrt_build import build_tensorrt_engine

    round_key = context.partition_key
    onnx_dir = onnx_model.path
    out_dir = artifacts.asset_dir("tensorrt_engine", round_key) / "engine"
    with fail_closed_on(context):
        result = build_tensorrt_engine(onnx_dir / "model.onnx", out_dir)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "digest": MetadataValue.text(result.sha256),
            "size_bytes": MetadataValue.int(result.size_bytes),
            "tensorrt_version": MetadataValue.text(result.tensorrt_version),
            "device": MetadataValue.text(result.device_name),
            "compute_capability": MetadataValue.text(result.compute_capability),
            "fp16": MetadataValue.bool(result.fp16_enabled),
            "build_seconds": metadata_float(round(result.build_seconds, 2)),
        },
        check_results=[verify_artifact("tensorrt_engine", out_dir, result.sha256)],
    )


class MoaiExportConfig(Config):
    """Which modules to export for encrypted inference, and the self-check bound."""

    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "v_proj"],
        description="Linear modules (names or dotted suffixes) exported for CKKS inference.",
    )
    self_check_tolerance: float = Field(
        default=1e-4, gt=0, description="Largest allowed CKKS vs plaintext error."
    )


@asset(
    group_name=groups.OPTIMIZE,
    partitions_def=round_partitions,
    ins=artifact_ins("global_adapter", "base_model"),
    kinds={"tenseal", "safetensors"},
    owners=["team:security"],
    check_specs=[
        integrity_check_spec("moai_export"),
        AssetCheckSpec(
            name="moai_hashes_match",
            asset="moai_export",
            blocking=True,
            description="Every exported digest and block re-derives from the checkpoint.",
        ),
        AssetCheckSpec(
            name="moai_self_check",
            asset="moai_export",
            blocking=True,
            description="One module evaluated under CKKS matches plaintext within tolerance.",
        ),
    ],
)
def moai_export(
    context: AssetExecutionContext,
    config: MoaiExportConfig,
    artifacts: ArtifactStore,
    global_adapter: VerifiedArtifact,
    base_model: VerifiedArtifact,
) -> MaterializeResult:
    """Adapter-merged weights of the target modules in a CKKS-friendly block layout for
    encrypted inference (docs/MOAI.md), with per-tensor and checkpoint SHA-256, verified
    against the source and self-checked by a homomorphic evaluation."""
    from tensorguard.moai.export import export_moai
    from tensorguard.moai.self_check import run_ckks_self_check
    from tensorguard.moai.verify import verify_moai_export

    round_key = context.partition_key
    adapter_dir = global_adapter.path
    base_dir = base_model_for_adapter(base_model.path, base_model.digest, adapter_dir)
    out_dir = artifacts.asset_dir("moai_export", round_key) / "moai"
    with fail_closed_on(context):
        result = export_moai(
            base_dir, out_dir, target_modules=config.target_modules, adapter_dir=adapter_dir
        )
        verification = verify_moai_export(out_dir, base_dir, adapter_dir=adapter_dir)
        self_check = run_ckks_self_check(out_dir, tolerance=config.self_check_tolerance)
    context.log.info(
        f"MOAI export of {len(result.module_names)} modules; CKKS self-check on "
        f"{self_check.module}: max error {self_check.max_abs_error:.2e}"
    )
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(out_dir)),
            "digest": MetadataValue.text(result.sha256),
            "size_bytes": MetadataValue.int(result.size_bytes),
            "checkpoint_sha256": MetadataValue.text(result.checkpoint_sha256),
            "modules": MetadataValue.int(len(result.module_names)),
            "self_check_module": MetadataValue.text(self_check.module),
            "self_check_max_abs_error": metadata_float(self_check.max_abs_error),
            "self_check_tolerance": metadata_float(self_check.tolerance),
        },
        check_results=[
            verify_artifact("moai_export", out_dir, result.sha256),
            AssetCheckResult(
                asset_key=AssetKey("moai_export"),
                check_name="moai_hashes_match",
                passed=verification.ok,
                metadata={
                    "modules_checked": MetadataValue.int(verification.modules_checked),
                    "problems": MetadataValue.text("; ".join(verification.problems) or "none"),
                },
            ),
            AssetCheckResult(
                asset_key=AssetKey("moai_export"),
                check_name="moai_self_check",
                passed=self_check.passed,
                metadata={
                    "max_abs_error": metadata_float(self_check.max_abs_error),
                    "tolerance": metadata_float(self_check.tolerance),
                },
            ),
        ],
    )
