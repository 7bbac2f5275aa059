"""The 2:4 check counts zeros per group of four, not per row or per layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tensorguard.optimize.pruning import verify_2_4


def _model_with_rows(rows: list[list[float]]) -> nn.Module:
    model = nn.Sequential(nn.Linear(len(rows[0]), len(rows), bias=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor(rows))
    return model


@pytest.mark.parametrize(
    "row",
    [
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1],  # two thirds zeros, one dense group
        [0, 0, 0, 1, 1, 1, 1, 0],  # exactly half zeros: 3 + 1 per group
        [0, 0, 0, 0, 1, 1, 0, 1],  # half zeros, the second group holds only one
    ],
)
def test_a_row_with_enough_zeros_but_one_dense_group_fails(row: list[float]) -> None:
    report = verify_2_4(_model_with_rows([row, row]), exclude=())
    [layer] = report.layers
    assert layer.sparsity >= 0.5
    assert layer.violating_groups == 2  # one per row
    assert not layer.pattern_exact
    assert not report.pattern_exact


def test_two_zeros_in_every_group_passes() -> None:
    report = verify_2_4(
        _model_with_rows([[0, 1, 0, 1, 1, 0, 0, 1], [1, 1, 0, 0, 0, 0, 0, 0]]), exclude=()
    )
    [layer] = report.layers
    assert (layer.groups, layer.violating_groups) == (4, 0)
    assert report.pattern_exact
