"""Load a model checkpoint from disk and hash it file by file and tensor by tensor.

Accepted inputs: a ``.safetensors`` file, a PyTorch ``.pt``/``.pth``/``.bin`` file
(read with ``torch.load(weights_only=True)``, which refuses arbitrary pickled
objects), or a Hugging Face model directory holding ``model.safetensors``, a
sharded ``model.safetensors.index.json``, ``pytorch_model.bin`` or a sharded
``pytorch_model.bin.index.json`` (searched in that order).

Digests:
- each file: SHA-256 of its bytes (what ``sha256sum`` prints);
- the whole checkpoint: the file's SHA-256 when there is one file, otherwise the
  SHA-256 of the sorted listing ``name NUL size NUL sha256 LF`` over its files;
- each tensor: SHA-256 of its raw little-endian bytes in its stored dtype, C order,
  which for safetensors is exactly the tensor's byte range inside the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from tensorguard.digest import sha256_file
from tensorguard.moai.errors import MoaiExportError

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES = (".pt", ".pth", ".bin")
SAFETENSORS_INDEX = "model.safetensors.index.json"
SAFETENSORS_SINGLE = "model.safetensors"
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"


@dataclass(frozen=True)
class CheckpointFile:
    """One weight file of a checkpoint, named relative to the checkpoint root."""

    name: str
    size: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {"name": self.name, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class Checkpoint:
    """Tensors loaded from a checkpoint together with the digests of their files."""

    root: Path
    files: tuple[CheckpointFile, ...]
    tensors: Mapping[str, torch.Tensor]
    tensor_files: Mapping[str, str]

    @property
    def sha256(self) -> str:
        """Digest of the whole checkpoint (see the module documentation)."""
        return listing_sha256(self.files)

    @property
    def is_directory(self) -> bool:
        """Whether the checkpoint was given as a model directory."""
        return self.root.is_dir()


def listing_sha256(files: tuple[CheckpointFile, ...]) -> str:
    """The single file's digest, or the digest of the sorted file listing."""
    if len(files) == 1:
        return files[0].sha256
    hasher = hashlib.sha256()
    for entry in sorted(files, key=lambda item: item.name):
        hasher.update(f"{entry.name}\0{entry.size}\0{entry.sha256}\n".encode())
    return hasher.hexdigest()


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's raw bytes in its own dtype, C order."""
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    return hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()


def load_checkpoint(path: Path) -> Checkpoint:
    """Load every tensor of the checkpoint at ``path`` and hash its files.

    Raises :class:`MoaiExportError` naming the file when it is missing, corrupted,
    not a flat ``name -> tensor`` mapping, or when shards repeat a tensor name.
    """
    if not path.exists():
        raise MoaiExportError(f"checkpoint not found: {path}")
    root = path if path.is_dir() else path.parent
    weight_files = _weight_files(path)
    tensors: dict[str, torch.Tensor] = {}
    tensor_files: dict[str, str] = {}
    entries: list[CheckpointFile] = []
    for weight_file in weight_files:
        name = weight_file.relative_to(root).as_posix()
        entries.append(CheckpointFile(name, weight_file.stat().st_size, sha256_file(weight_file)))
        for key, tensor in _read_tensors(weight_file).items():
            if key in tensors:
                raise MoaiExportError(
                    f"tensor {key!r} appears in both {tensor_files[key]} and {name}; "
                    "the checkpoint shards overlap"
                )
            tensors[key] = tensor
            tensor_files[key] = name
    return Checkpoint(root=path, files=tuple(entries), tensors=tensors, tensor_files=tensor_files)


def _weight_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix not in (SAFETENSORS_SUFFIX, *PICKLE_SUFFIXES):
            raise MoaiExportError(
                f"unsupported checkpoint file {path}: expected {SAFETENSORS_SUFFIX} or one "
                f"of {', '.join(PICKLE_SUFFIXES)}"
            )
        return [path]
    for index_name in (SAFETENSORS_INDEX, PICKLE_INDEX):
        if (path / index_name).is_file():
            return _sharded_files(path, path / index_name)
    for single_name in (SAFETENSORS_SINGLE, PICKLE_SINGLE):
        if (path / single_name).is_file():
            return [path / single_name]
    raise MoaiExportError(
        f"no checkpoint weights in {path}: expected one of {SAFETENSORS_INDEX}, "
        f"{SAFETENSORS_SINGLE}, {PICKLE_INDEX} or {PICKLE_SINGLE}"
    )


def _sharded_files(directory: Path, index_path: Path) -> list[Path]:
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        shard_names = sorted(set(weight_map.values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MoaiExportError(
            f"cannot read the shard index {index_path}: {exc}; it must be JSON with a "
            "'weight_map' object"
        ) from exc
    shards: list[Path] = []
    for shard_name in shard_names:
        pure = PurePosixPath(str(shard_name))
        if len(pure.parts) != 1 or pure.name in {"", ".", ".."}:
            raise MoaiExportError(
                f"shard index {index_path} names {shard_name!r}, which is not a plain file "
                "name inside the checkpoint directory"
            )
        shard = directory / pure.name
        if not shard.is_file():
            raise MoaiExportError(f"checkpoint shard not found: {shard} (listed in {index_path})")
        shards.append(shard)
    return shards


def _read_tensors(weight_file: Path) -> dict[str, torch.Tensor]:
    if weight_file.suffix == SAFETENSORS_SUFFIX:
        try:
            return load_file(weight_file)
        except (SafetensorError, OSError, ValueError) as exc:
            raise MoaiExportError(
                f"corrupted or unreadable safetensors checkpoint {weight_file}: {exc}"
            ) from exc
    try:
        loaded = torch.load(weight_file, map_location="cpu", weights_only=True)
    except Exception as exc:
        # A damaged pickle stream can fail in the unpickler with almost any exception
        # type (IndexError, KeyError, UnicodeDecodeError, ...); all mean "unreadable".
        raise MoaiExportError(
            f"corrupted or unsafe PyTorch checkpoint {weight_file}: {exc}; only tensors "
            "saved with torch.save(state_dict) load with weights_only=True"
        ) from exc
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise MoaiExportError(
            f"{weight_file} does not hold a flat state dict (tensor name -> tensor); save "
            "it with torch.save(model.state_dict(), path)"
        )
    return dict(loaded)
