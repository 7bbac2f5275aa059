"""Export adapter-merged linear weights in the CKKS row-block layout, with hashes.

Output directory::

    manifest.json                 format, CKKS parameters, source digests, modules
    modules/<module>.safetensors  weight_blocks (and bias) of one linear module

The export path has no randomness and records no time or host facts, so the same
checkpoint, adapter and parameters always give byte-identical files.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from tensorguard.digest import sha256_file, sha256_tree
from tensorguard.durable import atomic_directory
from tensorguard.hf import ADAPTER_FILES
from tensorguard.moai.architecture import LinearModuleSpec, linear_modules, select_modules
from tensorguard.moai.block_layout import (
    BlockGrid,
    CkksParameters,
    block_grid,
    pack_weight,
    packed_dtype,
)
from tensorguard.moai.checkpoint import (
    Checkpoint,
    CheckpointFile,
    listing_sha256,
    load_checkpoint,
    tensor_sha256,
)
from tensorguard.moai.errors import MoaiExportError
from tensorguard.optimize.errors import MergeError
from tensorguard.optimize.merge import merge_adapter

EXPORT_FORMAT = "tensorguard.moai/1"
LAYOUT_NAME = "ckks-row-blocks-of-weight-transpose/1"
MANIFEST_FILE = "manifest.json"
MODULES_DIR = "modules"
WEIGHT_BLOCKS = "weight_blocks"
BIAS = "bias"
_SAFE_MODULE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


@dataclass(frozen=True)
class ModuleTensors:
    """The weight (and bias) exported for one linear module, adapter merged."""

    spec: LinearModuleSpec
    weight: torch.Tensor
    bias: torch.Tensor | None


@dataclass(frozen=True)
class MoaiExportResult:
    """A published MOAI export."""

    path: Path
    manifest: dict[str, Any]
    size_bytes: int
    sha256: str
    checkpoint_sha256: str
    module_names: tuple[str, ...]


def export_moai(
    checkpoint_path: Path,
    destination: Path,
    *,
    target_modules: Sequence[str],
    adapter_dir: Path | None = None,
    config_dir: Path | None = None,
    ckks: CkksParameters | None = None,
    block_size: int | None = None,
) -> MoaiExportResult:
    """Validate the checkpoint's target modules and export them for CKKS inference.

    ``checkpoint_path`` is a checkpoint file or Hugging Face model directory (see
    :func:`~tensorguard.moai.checkpoint.load_checkpoint`). ``config_dir`` holds the
    ``config.json`` that fixes the expected module shapes; it defaults to the
    checkpoint directory. With ``adapter_dir`` the LoRA adapter is merged first
    (PEFT ``merge_and_unload``), which needs a checkpoint directory. ``block_size``
    defaults to, and may not exceed, half the CKKS slot count.
    """
    parameters = ckks or CkksParameters()
    side = parameters.max_block_size if block_size is None else block_size
    if not 1 <= side <= parameters.max_block_size:
        raise MoaiExportError(
            f"block size {side} must lie in [1, {parameters.max_block_size}] (half the "
            f"{parameters.slot_count} CKKS slots)"
        )
    checkpoint = load_checkpoint(checkpoint_path)
    specs = select_modules(
        linear_modules(resolve_config_dir(checkpoint_path, config_dir)), list(target_modules)
    )
    validate_modules(checkpoint, specs)
    modules = module_tensors(checkpoint, specs, adapter_dir)
    adapter_digests = adapter_files(adapter_dir) if adapter_dir is not None else None
    with atomic_directory(destination) as staging:
        (staging / MODULES_DIR).mkdir()
        records = [
            _write_module(staging, checkpoint, module, side, adapter_dir is not None)
            for module in modules
        ]
        manifest = _manifest(checkpoint, adapter_digests, parameters, records)
        (staging / MANIFEST_FILE).write_text(render_manifest(manifest), encoding="utf-8")
    size = sum(path.stat().st_size for path in destination.rglob("*") if path.is_file())
    return MoaiExportResult(
        path=destination,
        manifest=manifest,
        size_bytes=size,
        sha256=sha256_tree(destination),
        checkpoint_sha256=checkpoint.sha256,
        module_names=tuple(module.spec.name for module in modules),
    )


def validate_modules(checkpoint: Checkpoint, specs: Sequence[LinearModuleSpec]) -> None:
    """Check that each target module's tensors exist with the architecture's shapes."""
    for spec in specs:
        _require_tensor(
            checkpoint, spec.name, spec.weight_key, (spec.out_features, spec.in_features)
        )
        if spec.has_bias:
            _require_tensor(checkpoint, spec.name, spec.bias_key, (spec.out_features,))


def module_tensors(
    checkpoint: Checkpoint, specs: Sequence[LinearModuleSpec], adapter_dir: Path | None
) -> list[ModuleTensors]:
    """The tensors to export: the checkpoint's, or the adapter-merged model's."""
    source = checkpoint.tensors if adapter_dir is None else _merged_state(checkpoint, adapter_dir)
    modules = []
    for spec in specs:
        weight = source[spec.weight_key].detach().to("cpu")
        if tuple(weight.shape) != (spec.out_features, spec.in_features):
            raise MoaiExportError(
                f"the adapter-merged weight of module {spec.name} has shape "
                f"{tuple(weight.shape)}, expected {(spec.out_features, spec.in_features)}"
            )
        bias = source[spec.bias_key].detach().to("cpu") if spec.has_bias else None
        modules.append(ModuleTensors(spec=spec, weight=weight, bias=bias))
    return modules


def render_manifest(manifest: dict[str, Any]) -> str:
    """Canonical JSON text of a manifest (sorted keys, two-space indent, final newline)."""
    return json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def module_file_name(module_name: str) -> str:
    """Relative path of a module's file; refuses names that could escape the directory."""
    if not _SAFE_MODULE_NAME.fullmatch(module_name) or ".." in module_name:
        raise MoaiExportError(
            f"module name {module_name!r} is not a safe file name (letters, digits, '_', '.', '-')"
        )
    return f"{MODULES_DIR}/{module_name}.safetensors"


def grid_for(module: LinearModuleSpec, block_size: int) -> BlockGrid:
    """The block grid of one module."""
    return block_grid(module.out_features, module.in_features, block_size)


def resolve_config_dir(checkpoint_path: Path, config_dir: Path | None) -> Path:
    """The directory whose config.json fixes module shapes."""
    if config_dir is not None:
        return config_dir
    if checkpoint_path.is_dir():
        return checkpoint_path
    raise MoaiExportError(
        f"checkpoint {checkpoint_path} is a single file: pass config_dir, the directory "
        "holding the model's config.json, so that module shapes can be validated"
    )


def _require_tensor(
    checkpoint: Checkpoint, module: str, key: str, expected: tuple[int, ...]
) -> None:
    tensor = checkpoint.tensors.get(key)
    if tensor is None:
        files = ", ".join(entry.name for entry in checkpoint.files)
        raise MoaiExportError(
            f"target module {module} is missing from checkpoint {checkpoint.root} "
            f"({files}): no tensor {key!r}"
        )
    if tuple(tensor.shape) != expected:
        raise MoaiExportError(
            f"shape mismatch for module {module}: {key} in {checkpoint.tensor_files[key]} has "
            f"shape {tuple(tensor.shape)}, the model configuration expects {expected}"
        )


def _merged_state(checkpoint: Checkpoint, adapter_dir: Path) -> dict[str, torch.Tensor]:
    if not checkpoint.is_directory:
        raise MoaiExportError(
            f"merging the adapter in {adapter_dir} needs a Hugging Face model directory, "
            f"but the checkpoint {checkpoint.root} is a single file"
        )
    try:
        merged = merge_adapter(checkpoint.root, adapter_dir)
    except MergeError as exc:
        raise MoaiExportError(f"cannot merge the adapter for MOAI export: {exc}") from exc
    return dict(merged.state_dict())


def adapter_files(adapter_dir: Path) -> tuple[CheckpointFile, ...]:
    """Size and SHA-256 of the adapter's configuration and weights."""
    entries = []
    for name in ADAPTER_FILES:
        path = adapter_dir / name
        if not path.is_file():
            raise MoaiExportError(f"adapter file not found: {path}")
        entries.append(CheckpointFile(name, path.stat().st_size, sha256_file(path)))
    return tuple(entries)


def _write_module(
    staging: Path,
    checkpoint: Checkpoint,
    module: ModuleTensors,
    block_size: int,
    adapter_merged: bool,
) -> dict[str, Any]:
    spec = module.spec
    grid = grid_for(spec, block_size)
    blocks = pack_weight(module.weight, grid)
    tensors = {WEIGHT_BLOCKS: blocks}
    if module.bias is not None:
        tensors[BIAS] = module.bias.to(packed_dtype(module.bias.dtype)).contiguous()
    relative = module_file_name(spec.name)
    # One metadata key only: safetensors serialises __metadata__ from a Rust HashMap,
    # so several keys would come out in a different order on every run.
    save_file(tensors, staging / relative, metadata={"format": EXPORT_FORMAT})
    source_weight = checkpoint.tensors[spec.weight_key]
    return {
        "name": spec.name,
        "in_features": spec.in_features,
        "out_features": spec.out_features,
        "source_file": checkpoint.tensor_files[spec.weight_key],
        "source_dtype": str(source_weight.dtype).removeprefix("torch."),
        "source_weight_sha256": tensor_sha256(source_weight),
        "source_bias_sha256": (
            tensor_sha256(checkpoint.tensors[spec.bias_key]) if spec.has_bias else None
        ),
        "adapter_merged": adapter_merged,
        "exported_weight_sha256": tensor_sha256(module.weight),
        "file": relative,
        "file_sha256": sha256_file(staging / relative),
        "packed_dtype": str(blocks.dtype).removeprefix("torch."),
        "block_rows": grid.block_rows,
        "block_cols": grid.block_cols,
        "grid_rows": grid.grid_rows,
        "grid_cols": grid.grid_cols,
        "weight_blocks_sha256": tensor_sha256(blocks),
        "bias_sha256": tensor_sha256(tensors[BIAS]) if BIAS in tensors else None,
    }


def _manifest(
    checkpoint: Checkpoint,
    adapter_digests: tuple[CheckpointFile, ...] | None,
    parameters: CkksParameters,
    records: list[dict[str, Any]],
) -> dict[str, Any]:
    adapter = None
    if adapter_digests is not None:
        adapter = {
            "files": [entry.as_dict() for entry in adapter_digests],
            "sha256": listing_sha256(adapter_digests),
        }
    return {
        "format": EXPORT_FORMAT,
        "layout": LAYOUT_NAME,
        "ckks": parameters.as_dict(),
        "source": {
            "checkpoint_sha256": checkpoint.sha256,
            "files": [entry.as_dict() for entry in checkpoint.files],
            "adapter": adapter,
        },
        "modules": records,
    }
