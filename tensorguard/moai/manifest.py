"""Read a MOAI export's manifest and its module files back from disk."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tensorguard.digest import sha256_file
from tensorguard.moai.block_layout import BlockGrid
from tensorguard.moai.errors import MoaiExportError
from tensorguard.moai.export import BIAS, EXPORT_FORMAT, MANIFEST_FILE, WEIGHT_BLOCKS

MODULE_FIELDS = frozenset(
    {
        "name",
        "file",
        "file_sha256",
        "in_features",
        "out_features",
        "block_rows",
        "block_cols",
        "source_weight_sha256",
        "exported_weight_sha256",
        "weight_blocks_sha256",
    }
)


@dataclass(frozen=True)
class ExportedModule:
    """One module of an export, read from its file after its digest was checked."""

    record: dict[str, Any]
    grid: BlockGrid
    weight_blocks: torch.Tensor
    bias: torch.Tensor | None


def read_manifest(export_dir: Path) -> dict[str, Any]:
    """Parse ``manifest.json`` and check that it is a MOAI export of this format."""
    path = export_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MoaiExportError(f"MOAI manifest not found: {path}") from exc
    except (OSError, ValueError) as exc:
        raise MoaiExportError(f"cannot read the MOAI manifest {path}: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise MoaiExportError(f"{path} is not a {EXPORT_FORMAT} manifest")
    modules = manifest.get("modules")
    if not isinstance(modules, list) or not modules:
        raise MoaiExportError(f"{path} lists no modules")
    for record in modules:
        missing = sorted(MODULE_FIELDS - set(record)) if isinstance(record, dict) else ["all"]
        if missing:
            raise MoaiExportError(f"{path} has a module entry without fields {missing}")
    if not isinstance(manifest.get("source"), dict) or not isinstance(manifest.get("ckks"), dict):
        raise MoaiExportError(f"{path} lacks its 'source' or 'ckks' section")
    return manifest


def find_module_record(manifest: dict[str, Any], name: str) -> dict[str, Any]:
    """The manifest entry of module ``name``."""
    for record in manifest["modules"]:
        if record.get("name") == name:
            return dict(record)
    names = [record.get("name") for record in manifest["modules"]]
    raise MoaiExportError(f"module {name!r} is not in this MOAI export; it holds {names}")


def read_module(export_dir: Path, record: dict[str, Any]) -> ExportedModule:
    """Load a module file after checking its SHA-256 against the manifest."""
    try:
        relative = str(record["file"])
        grid = BlockGrid(
            in_features=int(record["in_features"]),
            out_features=int(record["out_features"]),
            block_rows=int(record["block_rows"]),
            block_cols=int(record["block_cols"]),
        )
        expected_digest = str(record["file_sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise MoaiExportError(f"malformed manifest entry {record.get('name')!r}: {exc}") from exc
    path = export_dir / relative
    if not path.resolve().is_relative_to(export_dir.resolve()):
        raise MoaiExportError(f"manifest entry points outside the export: {relative}")
    if not path.is_file():
        raise MoaiExportError(f"module file not found: {path}")
    if sha256_file(path) != expected_digest:
        raise MoaiExportError(
            f"module file {path} does not match its manifest SHA-256; the export was "
            "modified or corrupted, export it again"
        )
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as exc:
        raise MoaiExportError(f"cannot read module file {path}: {exc}") from exc
    blocks = tensors.get(WEIGHT_BLOCKS)
    if blocks is None or tuple(blocks.shape) != grid.packed_shape:
        raise MoaiExportError(
            f"module file {path} lacks {WEIGHT_BLOCKS} of shape {grid.packed_shape}"
        )
    return ExportedModule(record=record, grid=grid, weight_blocks=blocks, bias=tensors.get(BIAS))
