"""CKKS self-check: real TenSEAL evaluation of exported modules, with and without bias."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from tensorguard.moai import (
    MoaiExportError,
    MoaiExportResult,
    export_moai,
    run_ckks_self_check,
    verify_moai_export,
)
from tests.optimize.tiny_model import tiny_llama_config


@pytest.fixture(scope="module")
def tiled_export(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> MoaiExportResult:
    """Small blocks force a grid of several ciphertexts per input and per output."""
    return export_moai(
        tiny_base_model_dir,
        tmp_path_factory.mktemp("moai-tiled") / "export",
        target_modules=("model.layers.0.mlp.down_proj", "model.layers.1.self_attn.k_proj"),
        adapter_dir=tiny_adapter_dir,
        block_size=48,
    )


def test_smallest_module_is_checked_by_default(tiled_export: MoaiExportResult) -> None:
    result = run_ckks_self_check(tiled_export.path)
    assert result.module == "model.layers.1.self_attn.k_proj"
    assert (result.in_features, result.out_features) == (64, 32)
    assert result.passed
    assert 0 < result.max_abs_error <= 1e-4
    assert result.plaintext_max_abs > 1e-2, "the reference output must not be trivially zero"


def test_tiled_module_matches_plaintext(tiled_export: MoaiExportResult) -> None:
    record = next(
        r for r in tiled_export.manifest["modules"] if r["name"] == "model.layers.0.mlp.down_proj"
    )
    assert (record["grid_rows"], record["grid_cols"]) == (3, 2)
    result = run_ckks_self_check(tiled_export.path, module="model.layers.0.mlp.down_proj")
    assert result.passed, result.as_dict()


def test_tolerance_decides_pass_and_error_is_never_exactly_zero(
    tiled_export: MoaiExportResult,
) -> None:
    result = run_ckks_self_check(tiled_export.path, tolerance=0.0)
    assert result.max_abs_error > 0
    assert not result.passed


def test_tampered_module_file_is_refused(tiled_export: MoaiExportResult, tmp_path: Path) -> None:
    import shutil

    tampered = shutil.copytree(tiled_export.path, tmp_path / "tampered")
    module_file = tampered / "modules" / "model.layers.1.self_attn.k_proj.safetensors"
    tensors = load_file(module_file)
    tensors["weight_blocks"].mul_(2.0)
    save_file(tensors, module_file)
    with pytest.raises(MoaiExportError, match=r"model\.layers\.1\.self_attn\.k_proj\.safetensors"):
        run_ckks_self_check(tampered)


def test_unknown_module_is_named(tiled_export: MoaiExportResult) -> None:
    with pytest.raises(MoaiExportError, match="'lm_head' is not in this MOAI export"):
        run_ckks_self_check(tiled_export.path, module="lm_head")


def test_module_with_bias_is_exported_and_evaluated(tmp_path: Path) -> None:
    with torch.random.fork_rng():
        torch.manual_seed(4)
        model = LlamaForCausalLM(tiny_llama_config(attention_bias=True))
        with torch.no_grad():
            model.model.layers[0].self_attn.q_proj.bias.uniform_(-0.5, 0.5)
    model.save_pretrained(tmp_path / "biased")
    result = export_moai(
        tmp_path / "biased", tmp_path / "export", target_modules=("layers.0.self_attn.q_proj",)
    )
    exported = load_file(
        tmp_path / "export" / "modules" / "model.layers.0.self_attn.q_proj.safetensors"
    )
    assert torch.equal(exported["bias"], model.model.layers[0].self_attn.q_proj.bias.detach())
    assert result.manifest["modules"][0]["source_bias_sha256"] is not None
    check = run_ckks_self_check(result.path)
    assert check.passed, check.as_dict()
    assert verify_moai_export(result.path, tmp_path / "biased").ok
