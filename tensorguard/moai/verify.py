"""Check a MOAI export against the checkpoint (and adapter) it claims to come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tensorguard.moai.architecture import linear_modules
from tensorguard.moai.block_layout import pack_weight, packed_dtype
from tensorguard.moai.checkpoint import load_checkpoint, tensor_sha256
from tensorguard.moai.errors import MoaiExportError
from tensorguard.moai.export import (
    MANIFEST_FILE,
    adapter_files,
    module_tensors,
    resolve_config_dir,
    validate_modules,
)
from tensorguard.moai.manifest import read_manifest, read_module


@dataclass(frozen=True)
class MoaiVerification:
    """Outcome of :func:`verify_moai_export`: every mismatch found, by name."""

    checkpoint_sha256: str
    modules_checked: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when every digest and every exported value matches the source."""
        return not self.problems


def verify_moai_export(
    export_dir: Path,
    checkpoint_path: Path,
    *,
    adapter_dir: Path | None = None,
    config_dir: Path | None = None,
) -> MoaiVerification:
    """Recompute every digest and re-derive every exported block from the source.

    Checks the whole-checkpoint and per-file SHA-256, each module's source tensor
    SHA-256, the adapter files' SHA-256, each module file's SHA-256, and that the
    exported blocks equal the blocks packed afresh from the (merged) source.
    """
    manifest = read_manifest(export_dir)
    checkpoint = load_checkpoint(checkpoint_path)
    problems: list[str] = []
    source = manifest["source"]
    if source.get("checkpoint_sha256") != checkpoint.sha256:
        problems.append(
            f"checkpoint SHA-256 {checkpoint.sha256} differs from the manifest's "
            f"{source.get('checkpoint_sha256')}"
        )
    if source.get("files") != [entry.as_dict() for entry in checkpoint.files]:
        problems.append("checkpoint file list, sizes or SHA-256 differ from the manifest")
    problems.extend(_adapter_problems(source.get("adapter"), adapter_dir))
    records = {record["name"]: record for record in manifest["modules"]}
    specs_by_name = linear_modules(resolve_config_dir(checkpoint_path, config_dir))
    missing = sorted(set(records) - set(specs_by_name))
    if missing:
        raise MoaiExportError(f"exported modules {missing} are not linear modules of the model")
    specs = [specs_by_name[name] for name in sorted(records)]
    validate_modules(checkpoint, specs)
    for module in module_tensors(checkpoint, specs, adapter_dir):
        name = module.spec.name
        record = records[name]
        if record["source_weight_sha256"] != tensor_sha256(
            checkpoint.tensors[module.spec.weight_key]
        ):
            problems.append(f"{name}: source weight SHA-256 differs from the checkpoint")
        if record["exported_weight_sha256"] != tensor_sha256(module.weight):
            problems.append(f"{name}: exported weight SHA-256 differs from the merged source")
        try:
            exported = read_module(export_dir, record)
        except MoaiExportError as exc:
            problems.append(f"{name}: {exc}")
            continue
        if record["weight_blocks_sha256"] != tensor_sha256(exported.weight_blocks):
            problems.append(f"{name}: weight_blocks SHA-256 differs from the manifest")
        if not torch.equal(exported.weight_blocks, pack_weight(module.weight, exported.grid)):
            problems.append(f"{name}: exported weight blocks differ from the source weights")
        if not _same_bias(exported.bias, module.bias):
            problems.append(f"{name}: exported bias differs from the source bias")
    listed = {MANIFEST_FILE, *(record["file"] for record in records.values())}
    present = {p.relative_to(export_dir).as_posix() for p in export_dir.rglob("*") if p.is_file()}
    for extra in sorted(present - listed):
        problems.append(f"unexpected file in export: {extra}")
    return MoaiVerification(
        checkpoint_sha256=checkpoint.sha256,
        modules_checked=len(specs),
        problems=tuple(problems),
    )


def _adapter_problems(recorded: object, adapter_dir: Path | None) -> list[str]:
    if recorded is None and adapter_dir is None:
        return []
    if recorded is None:
        return ["the export was made without an adapter, but an adapter was given"]
    if adapter_dir is None:
        return ["the export is adapter-merged; pass the adapter directory to verify it"]
    current = [entry.as_dict() for entry in adapter_files(adapter_dir)]
    if not isinstance(recorded, dict) or recorded.get("files") != current:
        return ["adapter files, sizes or SHA-256 differ from the manifest"]
    return []


def _same_bias(exported: torch.Tensor | None, source: torch.Tensor | None) -> bool:
    if exported is None or source is None:
        return exported is None and source is None
    return torch.equal(exported, source.to(packed_dtype(source.dtype)))
