"""merge_adapter: PEFT merge checked against the LoRA formula, and its refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tensorguard.hf import CHECKPOINT_DTYPE, load_causal_lm
from tensorguard.optimize import MergeError, merge_adapter

Q_PROJ = "model.layers.0.self_attn.q_proj"


def _lora_factors(adapter_dir: Path, module: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    tensors = load_file(adapter_dir / "adapter_model.safetensors")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    prefix = f"base_model.model.{module}"
    scale = config["lora_alpha"] / config["r"]
    return tensors[f"{prefix}.lora_A.weight"], tensors[f"{prefix}.lora_B.weight"], scale


def test_merged_weight_is_base_plus_scaled_lora_product(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    base = load_causal_lm(tiny_base_model_dir, dtype=CHECKPOINT_DTYPE).state_dict()
    merged = merge_adapter(tiny_base_model_dir, tiny_adapter_dir).state_dict()
    lora_a, lora_b, scale = _lora_factors(tiny_adapter_dir, Q_PROJ)
    assert lora_b.abs().max() > 0, "the fixture adapter must have been trained"
    expected = base[f"{Q_PROJ}.weight"] + scale * (lora_b @ lora_a)
    assert not torch.equal(merged[f"{Q_PROJ}.weight"], base[f"{Q_PROJ}.weight"])
    torch.testing.assert_close(merged[f"{Q_PROJ}.weight"], expected, rtol=0, atol=1e-6)
    # Modules the adapter does not target keep their weights bit for bit.
    assert torch.equal(merged["lm_head.weight"], base["lm_head.weight"])
    assert not any("lora" in key for key in merged)


def test_missing_adapter_config_names_the_file(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    adapter = shutil.copytree(tiny_adapter_dir, tmp_path / "adapter")
    (adapter / "adapter_config.json").unlink()
    with pytest.raises(MergeError, match=r"adapter_config\.json is missing"):
        merge_adapter(tiny_base_model_dir, adapter)


def test_missing_base_model_names_the_directory(tiny_adapter_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MergeError, match=r"absent: model directory not found"):
        merge_adapter(tmp_path / "absent", tiny_adapter_dir)


def test_adapter_tensor_for_unknown_module_is_refused(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    adapter = shutil.copytree(tiny_adapter_dir, tmp_path / "adapter")
    tensors = load_file(adapter / "adapter_model.safetensors")
    key = f"base_model.model.{Q_PROJ}.lora_A.weight"
    tensors[key.replace("layers.0", "layers.9")] = tensors.pop(key)
    save_file(tensors, adapter / "adapter_model.safetensors")
    with pytest.raises(MergeError, match=r"layers\.9\.self_attn\.q_proj\.lora_A"):
        merge_adapter(tiny_base_model_dir, adapter)


def test_adapter_shape_mismatch_is_refused(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    adapter = shutil.copytree(tiny_adapter_dir, tmp_path / "adapter")
    tensors = load_file(adapter / "adapter_model.safetensors")
    key = f"base_model.model.{Q_PROJ}.lora_A.weight"
    tensors[key] = torch.zeros(4, 32)
    save_file(tensors, adapter / "adapter_model.safetensors")
    with pytest.raises(MergeError, match="trained on this base model"):
        merge_adapter(tiny_base_model_dir, adapter)
