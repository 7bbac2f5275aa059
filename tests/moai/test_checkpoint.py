"""Checkpoint loading and hashing: formats, shards, digests that match the bytes on disk."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from tensorguard.digest import sha256_file
from tensorguard.moai import MoaiExportError, load_checkpoint, tensor_sha256


def _safetensors_byte_ranges(path: Path) -> dict[str, bytes]:
    """Each tensor's raw bytes, read from the file layout directly (independent of torch)."""
    data = path.read_bytes()
    (header_size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_size])
    body = data[8 + header_size :]
    return {
        name: body[entry["data_offsets"][0] : entry["data_offsets"][1]]
        for name, entry in header.items()
        if name != "__metadata__"
    }


def test_directory_checkpoint_digests_match_the_file(tiny_base_model_dir: Path) -> None:
    checkpoint = load_checkpoint(tiny_base_model_dir)
    weights_file = tiny_base_model_dir / "model.safetensors"
    assert [entry.name for entry in checkpoint.files] == ["model.safetensors"]
    assert checkpoint.sha256 == sha256_file(weights_file)
    assert checkpoint.files[0].size == weights_file.stat().st_size
    ranges = _safetensors_byte_ranges(weights_file)
    assert set(ranges) == set(checkpoint.tensors)
    for name, tensor in checkpoint.tensors.items():
        assert tensor_sha256(tensor) == hashlib.sha256(ranges[name]).hexdigest(), name


@pytest.mark.parametrize("suffix", [".pt", ".bin"])
def test_torch_checkpoint_loads_with_weights_only(
    tiny_base_model_dir: Path, tmp_path: Path, suffix: str
) -> None:
    state = load_file(tiny_base_model_dir / "model.safetensors")
    path = tmp_path / f"weights{suffix}"
    torch.save(state, path)
    checkpoint = load_checkpoint(path)
    assert checkpoint.sha256 == sha256_file(path)
    assert checkpoint.tensors.keys() == state.keys()
    assert all(torch.equal(checkpoint.tensors[key], state[key]) for key in state)


def test_sharded_checkpoint_is_read_from_its_index(
    tiny_base_model_dir: Path, tmp_path: Path
) -> None:
    model = LlamaForCausalLM.from_pretrained(tiny_base_model_dir, local_files_only=True)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="100KB")
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shard_names = sorted(set(index["weight_map"].values()))
    assert len(shard_names) > 1
    checkpoint = load_checkpoint(tmp_path / "sharded")
    assert [entry.name for entry in checkpoint.files] == shard_names
    listing = "".join(
        f"{name}\0{(tmp_path / 'sharded' / name).stat().st_size}\0"
        f"{sha256_file(tmp_path / 'sharded' / name)}\n"
        for name in shard_names
    )
    assert checkpoint.sha256 == hashlib.sha256(listing.encode()).hexdigest()
    reference = load_file(tiny_base_model_dir / "model.safetensors")
    assert all(torch.equal(checkpoint.tensors[key], reference[key]) for key in reference)


def test_truncated_safetensors_names_the_file(tiny_base_model_dir: Path, tmp_path: Path) -> None:
    directory = shutil.copytree(tiny_base_model_dir, tmp_path / "model")
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(MoaiExportError, match=r"corrupted .*safetensors .*model\.safetensors"):
        load_checkpoint(directory)


def test_garbage_torch_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    path.write_bytes(b"this is not a zip archive or a pickle")
    with pytest.raises(
        MoaiExportError, match=r"corrupted or unsafe PyTorch checkpoint .*broken\.pt"
    ):
        load_checkpoint(path)


class _Payload:
    """An arbitrary object that weights_only loading must refuse."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"weight": torch.ones(2), "payload": _Payload()}, path)
    with pytest.raises(MoaiExportError, match=r"pickled\.pt"):
        load_checkpoint(path)


def test_non_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.ones(2)], path)
    with pytest.raises(MoaiExportError, match=r"list\.pt does not hold a flat state dict"):
        load_checkpoint(path)


def test_missing_and_empty_checkpoints_are_named(tmp_path: Path) -> None:
    with pytest.raises(MoaiExportError, match=r"checkpoint not found: .*absent"):
        load_checkpoint(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MoaiExportError, match=r"no checkpoint weights in .*empty"):
        load_checkpoint(tmp_path / "empty")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(MoaiExportError, match=r"unsupported checkpoint file .*weights\.npz"):
        load_checkpoint(tmp_path / "weights.npz")


def test_shard_index_cannot_point_outside_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "model"
    directory.mkdir()
    index = {"weight_map": {"model.embed_tokens.weight": "../elsewhere.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(MoaiExportError, match="not a plain file name"):
        load_checkpoint(directory)
