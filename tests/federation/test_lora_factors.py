"""Averaging LoRA factors vs averaging their products, on synthetic low-rank matrices."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
import torch

from tensorguard.federation._errors import LayoutError
from tensorguard.federation._lora_factors import (
    average_factors,
    average_products,
    compare_factor_averaging,
    lora_pairs,
    product_average_error,
)

OUT, IN, RANK = 24, 20, 3
A_NAME, B_NAME = "m.lora_A.weight", "m.lora_B.weight"


def _same_product_different_factors(
    sites: int, seed: int = 0
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Every site holds B_k A_k = ΔW exactly, through a different invertible mixing."""
    generator = torch.Generator().manual_seed(seed)
    b = torch.randn(OUT, RANK, generator=generator, dtype=torch.float64)
    a = torch.randn(RANK, IN, generator=generator, dtype=torch.float64)
    adapters = []
    for _ in range(sites):
        mix = torch.randn(RANK, RANK, generator=generator, dtype=torch.float64)
        mix += 3 * torch.eye(RANK, dtype=torch.float64)
        adapters.append({B_NAME: b @ mix, A_NAME: torch.linalg.solve(mix, a)})
    return b @ a, adapters


def test_factor_mean_breaks_a_product_that_every_site_agrees_on() -> None:
    target, adapters = _same_product_different_factors(4)
    weights = [1.0, 2.0, 3.0, 4.0]
    for adapter in adapters:
        assert torch.allclose(adapter[B_NAME] @ adapter[A_NAME], target)

    factor_mean = average_factors(adapters, weights)
    product_svd = average_products(adapters, weights)
    assert product_svd[A_NAME].shape == (RANK, IN)
    assert product_svd[B_NAME].shape == (OUT, RANK)
    assert torch.allclose(product_svd[B_NAME] @ product_svd[A_NAME], target, atol=1e-9)
    assert product_average_error(product_svd, adapters, weights) < 1e-12
    assert product_average_error(factor_mean, adapters, weights) > 0.05


def test_shared_frozen_a_makes_factor_averaging_exact() -> None:
    generator = torch.Generator().manual_seed(3)
    shared_a = torch.randn(RANK, IN, generator=generator, dtype=torch.float64)
    adapters = [
        {A_NAME: shared_a, B_NAME: torch.randn(OUT, RANK, generator=generator, dtype=torch.float64)}
        for _ in range(5)
    ]
    weights = [5.0, 1.0, 1.0, 2.0, 7.0]
    assert product_average_error(average_factors(adapters, weights), adapters, weights) < 1e-12


def test_svd_rule_is_the_best_rank_r_approximation() -> None:
    generator = torch.Generator().manual_seed(5)
    adapters = [
        {
            A_NAME: torch.randn(RANK, IN, generator=generator, dtype=torch.float64),
            B_NAME: torch.randn(OUT, RANK, generator=generator, dtype=torch.float64),
        }
        for _ in range(3)
    ]
    weights = [1.0, 1.0, 2.0]
    shares = torch.tensor(weights, dtype=torch.float64) / sum(weights)
    mean_product = sum(s * (ad[B_NAME] @ ad[A_NAME]) for s, ad in zip(shares, adapters))
    singular = torch.linalg.svdvals(mean_product)
    best = float(torch.sqrt((singular[RANK:] ** 2).sum()) / torch.linalg.matrix_norm(mean_product))
    svd_error = product_average_error(average_products(adapters, weights), adapters, weights)
    factor_error = product_average_error(average_factors(adapters, weights), adapters, weights)
    assert svd_error == pytest.approx(best, rel=1e-9)
    assert factor_error > svd_error


def test_eval_loss_comparison_on_a_regression_task() -> None:
    target, adapters = _same_product_different_factors(3, seed=11)
    generator = torch.Generator().manual_seed(12)
    inputs = torch.randn(256, IN, generator=generator, dtype=torch.float64)
    outputs = inputs @ target.T

    def held_out_mse(adapter: Mapping[str, torch.Tensor]) -> float:
        prediction = inputs @ (adapter[B_NAME] @ adapter[A_NAME]).T
        return float(torch.mean((prediction - outputs) ** 2))

    report = compare_factor_averaging(adapters, [1.0, 1.0, 1.0], held_out_mse)
    assert report.product_svd_loss < 1e-18
    assert report.factor_mean_loss > 1e-3
    assert report.loss_increase == pytest.approx(report.factor_mean_loss - report.product_svd_loss)
    assert report.factor_mean_error > report.product_svd_error


def test_pairs_and_weights_are_validated() -> None:
    assert lora_pairs([A_NAME, B_NAME]) == {"m.": (A_NAME, B_NAME)}
    with pytest.raises(LayoutError, match="no matching"):
        lora_pairs([A_NAME])
    with pytest.raises(LayoutError):
        average_factors([{A_NAME: torch.ones(1)}], [0.0])
