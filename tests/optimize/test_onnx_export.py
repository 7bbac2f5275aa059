"""ONNX export: dynamic axes, checker, measured parity, real weights, determinism."""

from __future__ import annotations

import copy
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from transformers import PreTrainedModel

from tensorguard.digest import sha256_file, sha256_tree
from tensorguard.optimize import (
    DEFAULT_PARITY_TOLERANCE,
    OnnxExportError,
    OnnxExportResult,
    export_causal_lm_to_onnx,
    measure_onnx_parity,
    merge_adapter,
    save_model_atomically,
)
from tensorguard.optimize.onnx_export import check_onnx_model
from tests.optimize.tiny_model import token_batches


@pytest.fixture(scope="module")
def merged_model(tiny_base_model_dir: Path, tiny_adapter_dir: Path) -> PreTrainedModel:
    return merge_adapter(tiny_base_model_dir, tiny_adapter_dir)


@pytest.fixture(scope="module")
def onnx_export(
    merged_model: PreTrainedModel, tmp_path_factory: pytest.TempPathFactory
) -> OnnxExportResult:
    return export_causal_lm_to_onnx(merged_model, tmp_path_factory.mktemp("onnx") / "model")


def test_export_writes_a_checked_model_with_external_data(onnx_export: OnnxExportResult) -> None:
    assert onnx_export.model_path.is_file()
    assert onnx_export.data_path is not None
    assert onnx_export.data_path.is_file()
    assert set(onnx_export.files) == {"model.onnx", "model.onnx.data"}
    assert onnx_export.files["model.onnx"] == sha256_file(onnx_export.model_path)
    assert onnx_export.sha256 == sha256_tree(onnx_export.path)
    assert onnx_export.size_bytes == sum(p.stat().st_size for p in onnx_export.path.iterdir())
    check_onnx_model(onnx_export.model_path)
    proto = onnx.load(str(onnx_export.model_path), load_external_data=False)
    assert [(opset.domain, opset.version) for opset in proto.opset_import] == [("", 18)]


def test_batch_and_sequence_axes_are_dynamic(onnx_export: OnnxExportResult) -> None:
    proto = onnx.load(str(onnx_export.model_path), load_external_data=False)
    (graph_input,) = proto.graph.input
    dims = [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert (graph_input.name, dims) == ("input_ids", ["batch", "sequence"])
    (graph_output,) = proto.graph.output
    out_dims = [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim]
    assert (graph_output.name, out_dims) == ("logits", ["batch", "sequence", 256])


def test_parity_is_measured_within_tolerance_on_unseen_shapes(
    onnx_export: OnnxExportResult, merged_model: PreTrainedModel
) -> None:
    assert onnx_export.parity_shapes == ((1, 1), (2, 7), (3, 16))
    assert 0 < onnx_export.max_abs_diff <= DEFAULT_PARITY_TOLERANCE
    assert onnx_export.within_tolerance()
    fresh = token_batches(seed=21, shapes=((4, 9), (1, 33)))
    assert measure_onnx_parity(merged_model, onnx_export.model_path, fresh) <= 1e-4


def test_parity_detects_a_model_that_differs(
    onnx_export: OnnxExportResult, merged_model: PreTrainedModel
) -> None:
    changed = copy.deepcopy(merged_model)
    with torch.no_grad():
        changed.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    difference = measure_onnx_parity(changed, onnx_export.model_path, token_batches(3, ((2, 5),)))
    assert difference > 1e-2
    assert not dataclasses.replace(onnx_export, max_abs_diff=difference).within_tolerance()


def test_initializers_hold_the_merged_weights(
    onnx_export: OnnxExportResult, merged_model: PreTrainedModel
) -> None:
    proto = onnx.load(str(onnx_export.model_path))
    initializers = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    state = merged_model.state_dict()
    for key in ("model.embed_tokens.weight", "model.layers.0.input_layernorm.weight"):
        np.testing.assert_array_equal(initializers[f"causal_lm.{key}"], state[key].numpy())
    # Linear weights are folded into MatMul initializers (transposed); find q_proj's.
    q_proj = state["model.layers.0.self_attn.q_proj.weight"].numpy()
    assert any(
        value.shape == q_proj.T.shape and np.array_equal(value, q_proj.T)
        for value in initializers.values()
    )


def test_exporting_twice_gives_identical_bytes(
    onnx_export: OnnxExportResult, merged_model: PreTrainedModel, tmp_path: Path
) -> None:
    again = export_causal_lm_to_onnx(merged_model, tmp_path / "again")
    assert again.files == onnx_export.files
    assert again.sha256 == onnx_export.sha256
    proto = onnx.load(str(again.model_path), load_external_data=False)
    assert not any(node.metadata_props for node in proto.graph.node)


@pytest.mark.slow
def test_export_in_another_process_gives_identical_bytes(
    onnx_export: OnnxExportResult, merged_model: PreTrainedModel, tmp_path: Path
) -> None:
    saved = save_model_atomically(merged_model, tmp_path / "merged")
    script = (
        "import sys; from pathlib import Path;"
        "from tensorguard.hf import load_causal_lm;"
        "from tensorguard.optimize import export_causal_lm_to_onnx;"
        "m = load_causal_lm(Path(sys.argv[1]), dtype='auto');"
        "r = export_causal_lm_to_onnx(m, Path(sys.argv[2]));"
        "print(r.sha256)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(saved.path), str(tmp_path / "elsewhere")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    assert completed.stdout.strip().splitlines()[-1] == onnx_export.sha256


def test_checker_rejects_a_corrupted_model(onnx_export: OnnxExportResult, tmp_path: Path) -> None:
    corrupted = shutil.copytree(onnx_export.path, tmp_path / "corrupted")
    (corrupted / "model.onnx").write_bytes(b"\x08\x0a\x12\x04not-a-model")
    with pytest.raises(OnnxExportError, match=r"onnx\.checker rejected .*model\.onnx"):
        check_onnx_model(corrupted / "model.onnx")


def test_missing_external_data_is_reported(
    onnx_export: OnnxExportResult, merged_model: PreTrainedModel, tmp_path: Path
) -> None:
    broken = shutil.copytree(onnx_export.path, tmp_path / "broken")
    (broken / "model.onnx.data").unlink()
    with pytest.raises(OnnxExportError, match=r"model\.onnx"):
        measure_onnx_parity(merged_model, broken / "model.onnx", token_batches(1, ((1, 4),)))
