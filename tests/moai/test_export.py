"""MOAI export: validation errors, adapter-merged values, hashes, determinism, verify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tensorguard.digest import file_manifest, sha256_file
from tensorguard.hf import CHECKPOINT_DTYPE, load_causal_lm
from tensorguard.moai import (
    MoaiExportError,
    MoaiExportResult,
    export_moai,
    load_checkpoint,
    run_ckks_self_check,
    tensor_sha256,
    verify_moai_export,
)
from tensorguard.moai.block_layout import BlockGrid, unpack_weight
from tensorguard.optimize import merge_adapter

TARGETS = ("self_attn.q_proj", "down_proj")


@pytest.fixture(scope="module")
def merged_export(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> MoaiExportResult:
    return export_moai(
        tiny_base_model_dir,
        tmp_path_factory.mktemp("moai") / "export",
        target_modules=TARGETS,
        adapter_dir=tiny_adapter_dir,
    )


def _module_weight(export_dir: Path, record: dict[str, object]) -> torch.Tensor:
    tensors = load_file(export_dir / str(record["file"]))
    grid = BlockGrid(
        in_features=int(str(record["in_features"])),
        out_features=int(str(record["out_features"])),
        block_rows=int(str(record["block_rows"])),
        block_cols=int(str(record["block_cols"])),
    )
    return unpack_weight(tensors["weight_blocks"], grid)


def test_exported_values_are_the_adapter_merged_weights(
    merged_export: MoaiExportResult, tiny_base_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    merged = merge_adapter(tiny_base_model_dir, tiny_adapter_dir).state_dict()
    base = load_causal_lm(tiny_base_model_dir, dtype=CHECKPOINT_DTYPE).state_dict()
    records = merged_export.manifest["modules"]
    assert [r["name"] for r in records] == [
        "model.layers.0.mlp.down_proj",
        "model.layers.0.self_attn.q_proj",
        "model.layers.1.mlp.down_proj",
        "model.layers.1.self_attn.q_proj",
    ]
    for record in records:
        key = f"{record['name']}.weight"
        exported = _module_weight(merged_export.path, record)
        assert torch.equal(exported, merged[key]), key
        assert not torch.equal(exported, base[key]), f"{key} must carry the adapter update"
        assert record["adapter_merged"] is True
        assert record["exported_weight_sha256"] == tensor_sha256(merged[key])


def test_manifest_hashes_match_the_source_and_the_files(
    merged_export: MoaiExportResult, tiny_base_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    manifest = merged_export.manifest
    on_disk = json.loads((merged_export.path / "manifest.json").read_text())
    assert on_disk == manifest
    source = manifest["source"]
    assert source["checkpoint_sha256"] == sha256_file(tiny_base_model_dir / "model.safetensors")
    assert merged_export.checkpoint_sha256 == source["checkpoint_sha256"]
    adapter_hashes = {entry["name"]: entry["sha256"] for entry in source["adapter"]["files"]}
    assert adapter_hashes == {
        "adapter_config.json": sha256_file(tiny_adapter_dir / "adapter_config.json"),
        "adapter_model.safetensors": sha256_file(tiny_adapter_dir / "adapter_model.safetensors"),
    }
    checkpoint = load_file(tiny_base_model_dir / "model.safetensors")
    for record in manifest["modules"]:
        assert record["source_weight_sha256"] == tensor_sha256(
            checkpoint[f"{record['name']}.weight"]
        )
        assert record["file_sha256"] == sha256_file(merged_export.path / record["file"])
    assert manifest["ckks"]["poly_modulus_degree"] == 8192


def test_verification_passes_and_catches_tampering(
    merged_export: MoaiExportResult,
    tiny_base_model_dir: Path,
    tiny_adapter_dir: Path,
    tmp_path: Path,
) -> None:
    verification = verify_moai_export(
        merged_export.path, tiny_base_model_dir, adapter_dir=tiny_adapter_dir
    )
    assert verification.ok, verification.problems
    assert verification.modules_checked == 4

    tampered = shutil.copytree(merged_export.path, tmp_path / "tampered")
    module_file = tampered / "modules" / "model.layers.1.mlp.down_proj.safetensors"
    tensors = load_file(module_file)
    tensors["weight_blocks"][0, 0, 0, 0] += 1.0
    save_file(tensors, module_file)
    problems = verify_moai_export(
        tampered, tiny_base_model_dir, adapter_dir=tiny_adapter_dir
    ).problems
    assert any("model.layers.1.mlp.down_proj" in p and "SHA-256" in p for p in problems)

    unmerged = verify_moai_export(merged_export.path, tiny_base_model_dir).problems
    assert any("adapter-merged" in p for p in unmerged)


def test_verification_catches_a_changed_checkpoint(
    merged_export: MoaiExportResult,
    tiny_base_model_dir: Path,
    tiny_adapter_dir: Path,
    tmp_path: Path,
) -> None:
    changed = shutil.copytree(tiny_base_model_dir, tmp_path / "changed")
    tensors = load_file(changed / "model.safetensors")
    tensors["model.layers.0.self_attn.q_proj.weight"][0, 0] += 0.5
    save_file(tensors, changed / "model.safetensors", metadata={"format": "pt"})
    problems = verify_moai_export(
        merged_export.path, changed, adapter_dir=tiny_adapter_dir
    ).problems
    assert any(p.startswith("checkpoint SHA-256") for p in problems)
    assert any(p.startswith("model.layers.0.self_attn.q_proj: source weight") for p in problems)
    assert not any("model.layers.1" in p for p in problems)


def test_export_without_seeding_is_byte_identical(
    merged_export: MoaiExportResult,
    tiny_base_model_dir: Path,
    tiny_adapter_dir: Path,
    tmp_path: Path,
) -> None:
    first = export_moai(
        tiny_base_model_dir,
        tmp_path / "first",
        target_modules=TARGETS,
        adapter_dir=tiny_adapter_dir,
    )
    second = export_moai(
        tiny_base_model_dir,
        tmp_path / "second",
        target_modules=TARGETS,
        adapter_dir=tiny_adapter_dir,
    )
    assert file_manifest(first.path) == file_manifest(second.path)
    assert first.sha256 == second.sha256 == merged_export.sha256
    for name in file_manifest(first.path):
        assert (first.path / name).read_bytes() == (second.path / name).read_bytes()


def test_torch_checkpoint_with_config_dir_exports_source_weights(
    tiny_base_model_dir: Path, tmp_path: Path
) -> None:
    state = load_file(tiny_base_model_dir / "model.safetensors")
    torch.save(state, tmp_path / "weights.bin")
    result = export_moai(
        tmp_path / "weights.bin",
        tmp_path / "export",
        target_modules=("model.layers.1.self_attn.k_proj",),
        config_dir=tiny_base_model_dir,
    )
    (record,) = result.manifest["modules"]
    key = "model.layers.1.self_attn.k_proj.weight"
    assert (record["in_features"], record["out_features"]) == (64, 32)
    assert torch.equal(_module_weight(result.path, record), state[key])
    assert result.manifest["source"]["adapter"] is None
    assert result.checkpoint_sha256 == sha256_file(tmp_path / "weights.bin")
    assert verify_moai_export(
        result.path, tmp_path / "weights.bin", config_dir=tiny_base_model_dir
    ).ok


def test_single_file_checkpoint_needs_a_config(tiny_base_model_dir: Path, tmp_path: Path) -> None:
    shutil.copy(tiny_base_model_dir / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(MoaiExportError, match="pass config_dir"):
        export_moai(tmp_path / "model.safetensors", tmp_path / "out", target_modules=("q_proj",))


def test_unknown_target_module_is_named(tiny_base_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MoaiExportError, match="target module 'qkv_proj' matches no linear module"):
        export_moai(tiny_base_model_dir, tmp_path / "out", target_modules=("q_proj", "qkv_proj"))
    assert not (tmp_path / "out").exists()


def test_module_missing_from_checkpoint_is_named(tiny_base_model_dir: Path, tmp_path: Path) -> None:
    damaged = shutil.copytree(tiny_base_model_dir, tmp_path / "damaged")
    tensors = load_file(damaged / "model.safetensors")
    del tensors["model.layers.1.self_attn.q_proj.weight"]
    save_file(tensors, damaged / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        MoaiExportError,
        match=r"target module model\.layers\.1\.self_attn\.q_proj is missing from checkpoint",
    ):
        export_moai(damaged, tmp_path / "out", target_modules=("q_proj",))


def test_shape_mismatch_names_module_and_file(tiny_base_model_dir: Path, tmp_path: Path) -> None:
    damaged = shutil.copytree(tiny_base_model_dir, tmp_path / "damaged")
    tensors = load_file(damaged / "model.safetensors")
    tensors["model.layers.0.mlp.up_proj.weight"] = torch.zeros(96, 64)
    save_file(tensors, damaged / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        MoaiExportError,
        match=r"shape mismatch for module model\.layers\.0\.mlp\.up_proj: .* in "
        r"model\.safetensors has shape \(96, 64\), .* expects \(128, 64\)",
    ):
        export_moai(damaged, tmp_path / "out", target_modules=("up_proj",))


def test_corrupted_checkpoint_is_named(tiny_base_model_dir: Path, tmp_path: Path) -> None:
    damaged = shutil.copytree(tiny_base_model_dir, tmp_path / "damaged")
    (damaged / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(MoaiExportError, match=r"damaged/model\.safetensors"):
        export_moai(damaged, tmp_path / "out", target_modules=("q_proj",))


def test_adapter_merge_needs_a_model_directory(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    torch.save(load_checkpoint(tiny_base_model_dir).tensors, tmp_path / "weights.pt")
    with pytest.raises(MoaiExportError, match="needs a Hugging Face model directory"):
        export_moai(
            tmp_path / "weights.pt",
            tmp_path / "out",
            target_modules=("q_proj",),
            adapter_dir=tiny_adapter_dir,
            config_dir=tiny_base_model_dir,
        )


def test_block_size_is_bounded_by_the_slot_count(tiny_base_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(MoaiExportError, match=r"block size 4096 must lie in \[1, 2048\]"):
        export_moai(
            tiny_base_model_dir, tmp_path / "out", target_modules=("q_proj",), block_size=4096
        )


def test_malformed_manifest_is_refused(merged_export: MoaiExportResult, tmp_path: Path) -> None:
    broken = shutil.copytree(merged_export.path, tmp_path / "broken")
    manifest = json.loads((broken / "manifest.json").read_text())
    del manifest["modules"][0]["file_sha256"]
    (broken / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MoaiExportError, match=r"module entry without fields \['file_sha256'\]"):
        run_ckks_self_check(broken)
