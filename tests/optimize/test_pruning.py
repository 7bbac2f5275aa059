"""2:4 pruning: exact masks, verification that can fail, loss measurement, saving."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.ao.pruning.sparsifier.weight_norm_sparsifier import WeightNormSparsifier
from transformers import LlamaForCausalLM

from tensorguard.digest import sha256_tree
from tensorguard.hf import CHECKPOINT_DTYPE, TokenBatch, evaluate_token_loss, load_causal_lm
from tensorguard.optimize import (
    PruningError,
    apply_2_4_sparsity,
    merge_adapter,
    prune_2_4_and_evaluate,
    save_model_atomically,
    two_four_mask,
    verify_2_4,
)
from tests.optimize.tiny_model import tiny_llama_config


def test_mask_keeps_the_two_largest_magnitudes_of_every_group() -> None:
    weight = torch.randn(16, 32, generator=torch.Generator().manual_seed(3))
    keep = two_four_mask(weight)
    groups = weight.reshape(16, 8, 4).abs()
    kept = keep.reshape(16, 8, 4)
    assert torch.all(kept.sum(dim=-1) == 2)
    for row in range(16):
        for group in range(8):
            magnitudes = groups[row, group].tolist()
            largest_two = sorted(range(4), key=lambda i: -magnitudes[i])[:2]
            assert sorted(torch.nonzero(kept[row, group]).flatten().tolist()) == sorted(largest_two)


def test_ties_go_to_the_lower_input_index() -> None:
    weight = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.5, -2.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0] * 2])
    keep = two_four_mask(weight)
    assert keep.tolist() == [
        [True, True, False, False, False, True, True, False],
        [True, True, False, False, True, True, False, False],
    ]


def test_mask_agrees_with_torch_weight_norm_sparsifier() -> None:
    linear = nn.Linear(64, 24)
    layer = nn.Sequential(linear)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(24, 64, generator=torch.Generator().manual_seed(5)))
    original = linear.weight.detach().clone()
    sparsifier = WeightNormSparsifier(
        sparsity_level=1.0, sparse_block_shape=(1, 4), zeros_per_block=2
    )
    sparsifier.prepare(layer, [{"tensor_fqn": "0.weight"}])  # type: ignore[no-untyped-call]
    sparsifier.step()
    sparsifier.squash_mask()
    assert torch.equal(linear.weight.detach(), original * two_four_mask(original))


def test_odd_input_width_is_refused_with_the_layer_name() -> None:
    ok = nn.Linear(8, 4)
    model = nn.Sequential()
    model.add_module("ok", ok)
    model.add_module("narrow", nn.Linear(6, 4))
    before = ok.weight.detach().clone()
    with pytest.raises(PruningError, match=r"narrow: in_features=6 is not a multiple of 4"):
        apply_2_4_sparsity(model, exclude=())
    assert torch.equal(ok.weight, before), "a refused run must leave every layer untouched"
    report = verify_2_4(model, exclude=())
    assert not report.pattern_exact
    assert "narrow" in report.violating_layers


def test_non_finite_weights_are_refused() -> None:
    weight = torch.ones(2, 4)
    weight[1, 2] = float("nan")
    with pytest.raises(PruningError, match="NaN or infinite"):
        two_four_mask(weight)


def test_pruned_model_is_exact_2_4_and_keeps_untouched_layers(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    model = merge_adapter(tiny_base_model_dir, tiny_adapter_dir)
    original = copy.deepcopy(model.state_dict())
    report = apply_2_4_sparsity(model)
    assert report.pattern_exact
    assert report.excluded == ("lm_head",)
    assert len(report.layers) == 2 * 7
    assert report.overall_sparsity == pytest.approx(0.5)
    pruned = model.state_dict()
    assert torch.equal(pruned["lm_head.weight"], original["lm_head.weight"])
    assert torch.equal(pruned["model.embed_tokens.weight"], original["model.embed_tokens.weight"])
    key = "model.layers.1.mlp.down_proj.weight"
    keep = two_four_mask(original[key])
    assert torch.equal(pruned[key], original[key] * keep)
    layer = next(item for item in report.layers if item.name == "model.layers.1.mlp.down_proj")
    assert (layer.out_features, layer.in_features, layer.violating_groups) == (64, 128, 0)


def test_verification_detects_a_single_broken_group(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    model = merge_adapter(tiny_base_model_dir, tiny_adapter_dir)
    apply_2_4_sparsity(model)
    weight = model.model.layers[0].self_attn.v_proj.weight
    zero_position = int(torch.nonzero(weight[3, :4] == 0)[0])
    with torch.no_grad():
        weight[3, zero_position] = 0.25
    report = verify_2_4(model)
    assert not report.pattern_exact
    assert report.violating_layers == ("model.layers.0.self_attn.v_proj",)
    broken = next(item for item in report.layers if not item.pattern_exact)
    assert broken.violating_groups == 1


def test_exclusion_that_matches_nothing_is_refused(tiny_base_model_dir: Path) -> None:
    model = load_causal_lm(tiny_base_model_dir, dtype=CHECKPOINT_DTYPE)
    with pytest.raises(PruningError, match=r"'lm_haed' matches no nn\.Linear"):
        apply_2_4_sparsity(model, exclude=("lm_haed",))


def test_head_tied_to_the_embedding_is_refused() -> None:
    model = LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    with pytest.raises(PruningError, match=r"lm_head\.weight is shared with model\.embed_tokens"):
        apply_2_4_sparsity(model, exclude=())


def test_loss_matches_transformers_own_loss(
    tiny_base_model_dir: Path, eval_batches: list[torch.Tensor]
) -> None:
    model = load_causal_lm(tiny_base_model_dir, dtype=CHECKPOINT_DTYPE)
    batch = eval_batches[0]
    with torch.no_grad():
        reference = float(model(input_ids=batch, labels=batch).loss)
    assert evaluate_token_loss(model, [TokenBatch.unpadded(batch)]) == pytest.approx(
        reference, rel=1e-6
    )


def test_prune_and_evaluate_records_the_loss_change(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, eval_batches: list[torch.Tensor]
) -> None:
    model = merge_adapter(tiny_base_model_dir, tiny_adapter_dir)
    batches = [TokenBatch.unpadded(ids) for ids in eval_batches]
    unpruned = evaluate_token_loss(copy.deepcopy(model), batches)
    outcome = prune_2_4_and_evaluate(model, batches)
    assert outcome.eval_loss_before == pytest.approx(unpruned, rel=1e-6)
    assert outcome.eval_loss_after == pytest.approx(evaluate_token_loss(model, batches), rel=1e-6)
    assert outcome.eval_loss_after != outcome.eval_loss_before
    assert outcome.as_dict()["eval_loss_delta"] == pytest.approx(
        outcome.eval_loss_after - outcome.eval_loss_before
    )
    assert outcome.report.pattern_exact


def test_saved_pruned_model_reloads_exact_2_4(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, tmp_path: Path
) -> None:
    model = merge_adapter(tiny_base_model_dir, tiny_adapter_dir)
    apply_2_4_sparsity(model)
    destination = tmp_path / "pruned"
    destination.mkdir()
    (destination / "stale.txt").write_text("from an earlier run")
    saved = save_model_atomically(model, destination)
    assert "model.safetensors" in saved.files
    assert "stale.txt" not in saved.files
    assert not (destination / "stale.txt").exists()
    assert saved.sha256 == sha256_tree(destination)
    assert saved.size_bytes == sum(p.stat().st_size for p in destination.iterdir())
    reloaded = load_causal_lm(destination, dtype=CHECKPOINT_DTYPE)
    assert verify_2_4(reloaded).pattern_exact
    for key, tensor in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], tensor), key
    assert [p.name for p in tmp_path.iterdir()] == ["pruned"], "no staging leftovers"
