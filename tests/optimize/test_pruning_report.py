"""The 2:4 report the gate and the model card read, and every pruning refusal in full.

The gate judges ``sparsity`` and ``pattern_exact`` from this report and the release's
metadata shows ``as_dict``; the refusals are what an operator reads when a model cannot
be pruned. Small hand-built ``nn.Linear`` models keep these tests fast (#18 item 6:
the mutation run on optimize/pruning.py found the report fields, the refusal texts and
the tie rules without a test).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import LlamaForCausalLM

from tensorguard.hf import TokenBatch
from tensorguard.optimize import PruningError
from tensorguard.optimize.pruning import (
    LayerSparsity,
    PruningOutcome,
    TwoFourReport,
    apply_2_4_sparsity,
    prunable_linear_layers,
    prune_2_4_and_evaluate,
    two_four_mask,
    verify_2_4,
)
from tests.optimize.tiny_model import tiny_llama_config


def _linear(rows: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(rows[0]), len(rows), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rows))
    return layer


def test_the_report_of_an_exact_and_a_broken_layer_is_complete() -> None:
    model = nn.Sequential()
    model.add_module("exact", _linear([[0, 1, 0, 2, 3, 0, 0, 0], [0, 0, 0, 0, 5, 0, 6, 0]]))
    model.add_module("broken", _linear([[1, 1, 1, 0], [0, 0, 0, 0], [1, 2, 3, 4]]))
    model.add_module("lm_head", _linear([[1, 1, 1, 1]]))
    report = verify_2_4(model)
    assert report.as_dict() == {
        "pattern_exact": False,
        "overall_sparsity": 16 / 28,
        "total_weights": 28,
        "zero_weights": 16,
        "violating_layers": ["broken"],
        "excluded": ["lm_head"],
        "layers": [
            {
                "name": "exact",
                "shape": [2, 8],
                "zeros": 11,
                "total": 16,
                "sparsity": 11 / 16,
                "groups": 4,
                "violating_groups": 0,
                "pattern_exact": True,
            },
            {
                "name": "broken",
                "shape": [3, 4],
                "zeros": 5,
                "total": 12,
                "sparsity": 5 / 12,
                "groups": 3,
                "violating_groups": 2,
                "pattern_exact": False,
            },
        ],
    }


def test_a_layer_that_cannot_carry_the_pattern_is_reported_not_exact() -> None:
    model = nn.Sequential(_linear([[0, 0, 0, 0, 0, 0]]))
    [layer] = verify_2_4(model, exclude=()).layers
    assert layer == LayerSparsity("0", 1, 6, 6, 0, 0)
    assert not layer.shape_supports_2_4
    assert not layer.pattern_exact
    assert layer.sparsity == 1.0


def test_a_report_without_layers_is_not_exact_and_has_no_sparsity() -> None:
    empty = TwoFourReport(layers=(), excluded=("lm_head",))
    assert not empty.pattern_exact
    assert empty.overall_sparsity == 0.0
    assert empty.total_weights == 0
    exact = LayerSparsity("a", 1, 4, 2, 1, 0)
    assert TwoFourReport(layers=(exact,), excluded=()).pattern_exact
    broken = LayerSparsity("b", 1, 4, 1, 1, 1)
    assert TwoFourReport(layers=(exact, broken), excluded=()).violating_layers == ("b",)


def test_the_outcome_adds_the_losses_to_the_report() -> None:
    report = TwoFourReport(layers=(LayerSparsity("a", 1, 4, 2, 1, 0),), excluded=())
    outcome = PruningOutcome(report=report, eval_loss_before=2.0, eval_loss_after=2.25)
    assert outcome.eval_loss_delta == 0.25
    assert outcome.as_dict() == {
        "eval_loss_before": 2.0,
        "eval_loss_after": 2.25,
        "eval_loss_delta": 0.25,
        **report.as_dict(),
    }


def test_each_mask_refusal_is_stated_in_full() -> None:
    with pytest.raises(PruningError) as raised:
        two_four_mask(torch.ones(2, 2, 4))
    assert str(raised.value) == "2:4 masks apply to 2-D weights, got shape (2, 2, 4)"
    with pytest.raises(PruningError) as raised:
        two_four_mask(torch.ones(2, 6))
    assert str(raised.value) == (
        "in_features=6 is not a multiple of 4, so the weight cannot carry a 2:4 pattern; "
        "exclude this layer from pruning"
    )
    for bad in (float("inf"), float("-inf"), float("nan")):
        with pytest.raises(PruningError) as raised:
            two_four_mask(torch.tensor([[1.0, bad, 0.0, 0.0]]))
        assert str(raised.value) == (
            "weight holds NaN or infinite values; refusing to rank magnitudes"
        )


def test_a_layer_that_cannot_be_pruned_is_named_and_nothing_changes() -> None:
    ok = _linear([[1, 2, 3, 4]])
    model = nn.Sequential()
    model.add_module("ok", ok)
    model.add_module("narrow", _linear([[1, 2, 3, 4, 5, 6]]))
    with pytest.raises(PruningError) as raised:
        apply_2_4_sparsity(model, exclude=())
    assert str(raised.value) == (
        "cannot 2:4-prune narrow: in_features=6 is not a multiple of 4, so the weight cannot "
        "carry a 2:4 pattern; exclude this layer from pruning"
    )
    assert ok.weight.tolist() == [[1, 2, 3, 4]]


def test_pruning_zeroes_exactly_the_two_smallest_of_each_group() -> None:
    layer = _linear([[-4, 1, 3, -2, 0.5, -0.25, 8, 7]])
    report = apply_2_4_sparsity(nn.Sequential(layer), exclude=())
    assert layer.weight.tolist() == [[-4, 0, 3, 0, 0, 0, 8, 7]]
    assert report.pattern_exact
    assert report.zero_weights == 4


def test_an_exclusion_pattern_that_matches_nothing_lists_the_first_five_layers() -> None:
    model = nn.Sequential(*[_linear([[1, 2, 3, 4]]) for _ in range(7)])
    with pytest.raises(PruningError) as raised:
        prunable_linear_layers(model, ("lm_head",))
    assert str(raised.value) == (
        "exclusion pattern 'lm_head' matches no nn.Linear module; known linear modules "
        "include ['0', '1', '2', '3', '4']"
    )
    assert [name for name, _ in prunable_linear_layers(model, ("[0-4]",))] == ["5", "6"]


class _RootHoldsTheWeight(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = _linear([[1, 2, 3, 4]])
        self.tied = self.lin.weight


def test_a_weight_shared_with_a_module_that_is_not_pruned_is_refused() -> None:
    with pytest.raises(PruningError) as raised:
        prunable_linear_layers(_RootHoldsTheWeight(), ())
    assert str(raised.value) == (
        "lin.weight is shared with the model root, which is not pruned; exclude 'lin' (or "
        "untie the weights) before 2:4 pruning"
    )
    first, second = _linear([[1, 2, 3, 4]]), _linear([[1, 2, 3, 4]])
    second.weight = first.weight
    tied = nn.Sequential(first, second)
    with pytest.raises(PruningError) as raised:
        prunable_linear_layers(tied, ("1",))
    assert str(raised.value).startswith("0.weight is shared with 1, which is not pruned;")


def test_a_weight_shared_by_two_pruned_layers_is_allowed() -> None:
    first, second = _linear([[1, 2, 3, 4]]), _linear([[1, 2, 3, 4]])
    second.weight = first.weight
    tied = nn.Sequential(first, second)
    assert [name for name, _ in prunable_linear_layers(tied, ())] == ["0", "1"]
    assert apply_2_4_sparsity(tied, exclude=()).pattern_exact
    assert second.weight.tolist() == [[0, 0, 3, 4]]


def test_the_report_after_pruning_uses_the_same_exclusions() -> None:
    head = _linear([[4, 3, 2, 1]])
    model = nn.Sequential()
    model.add_module("body", _linear([[1, 2, 3, 4]]))
    model.add_module("lm_head", head)
    report = apply_2_4_sparsity(model, exclude=())
    assert [layer.name for layer in report.layers] == ["body", "lm_head"]
    assert report.excluded == ()
    assert head.weight.tolist() == [[4, 3, 0, 0]]


def test_prune_and_evaluate_passes_its_exclusions_on(eval_batches: list[torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_llama_config())
    batches = [TokenBatch.unpadded(ids) for ids in eval_batches]
    outcome = prune_2_4_and_evaluate(model, batches, exclude=())
    assert outcome.report.excluded == ()
    assert "lm_head" in [layer.name for layer in outcome.report.layers]
    assert outcome.report.pattern_exact
    assert outcome.as_dict()["excluded"] == []
