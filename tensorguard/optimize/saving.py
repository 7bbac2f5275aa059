"""Save a transformers model as a safetensors checkpoint, atomically, and describe it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transformers import PreTrainedModel

from tensorguard.digest import file_manifest, sha256_tree
from tensorguard.durable import atomic_directory
from tensorguard.optimize.errors import OptimizeError


@dataclass(frozen=True)
class SavedModel:
    """A checkpoint directory as published: its files, total size and tree digest."""

    path: Path
    files: dict[str, str]
    size_bytes: int
    sha256: str


def save_model_atomically(model: PreTrainedModel, destination: Path) -> SavedModel:
    """Write ``model`` with ``save_pretrained`` (safetensors) and publish it atomically.

    ``destination`` is replaced as a whole; its digest is :func:`sha256_tree` over the
    published files.
    """
    with atomic_directory(destination) as staging:
        model.save_pretrained(staging)
        if not any(staging.glob("*.safetensors")):
            raise OptimizeError(
                f"save_pretrained wrote no safetensors file for {destination}; upgrade "
                "transformers so that checkpoints are stored as safetensors"
            )
    files = file_manifest(destination)
    size = sum((destination / name).stat().st_size for name in files)
    return SavedModel(
        path=destination, files=files, size_bytes=size, sha256=sha256_tree(destination)
    )
