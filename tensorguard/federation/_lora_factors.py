"""Averaging LoRA factors versus averaging their products.

A LoRA module contributes ``ΔW = s · B A`` (``B``: out×r, ``A``: r×in, ``s = α/r``).
FedAvg over factors gives ``B̄ Ā = (Σ w_k B_k)(Σ w_k A_k)``, which differs from the
average of the products ``Σ w_k B_k A_k`` by cross terms ``B_j A_k`` (j ≠ k). The
exact alternative averages the products and refactors the result to rank ``r`` by a
truncated SVD (the best rank-r approximation, Eckart-Young).

This module computes both aggregates from plaintext site adapters and measures the
difference: the relative Frobenius error of each against the true product average,
and, through a caller-supplied evaluation function, the held-out loss of each.

The SVD is done without forming any out×in matrix before it is needed for the error:
``Σ w_k B_k A_k = [w_1 B_1 … w_K B_K] [A_1; …; A_K]``, so QR of both stacked factors
and an SVD of a (K·r)×(K·r) core give the truncated factors directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from tensorguard.federation._errors import LayoutError

LORA_A = "lora_A"
LORA_B = "lora_B"

StateDict = Mapping[str, torch.Tensor]


def is_lora_a(name: str) -> bool:
    """True for a LoRA A factor's tensor name (peft's ``<module>.lora_A.weight``)."""
    return f".{LORA_A}." in name or name.startswith(f"{LORA_A}.")


def lora_pairs(names: Sequence[str]) -> dict[str, tuple[str, str]]:
    """Map each LoRA module prefix to its ``(lora_A name, lora_B name)``."""
    pairs: dict[str, tuple[str, str]] = {}
    name_set = set(names)
    for name in sorted(names):
        if not is_lora_a(name):
            continue
        b_name = name.replace(LORA_A, LORA_B, 1)
        if b_name not in name_set:
            raise LayoutError(f"LoRA tensor {name!r} has no matching {b_name!r}")
        pairs[name.split(LORA_A, 1)[0]] = (name, b_name)
    if not pairs:
        raise LayoutError("no LoRA A/B tensor pairs found")
    return pairs


def _normalised(weights: Sequence[float], count: int) -> list[float]:
    if len(weights) != count or count == 0:
        raise LayoutError("need one positive weight per site adapter")
    total = float(sum(weights))
    if not all(w > 0 and math.isfinite(w) for w in weights) or total <= 0:
        raise LayoutError("site weights must be positive and finite")
    return [float(w) / total for w in weights]


def average_factors(
    sites: Sequence[StateDict], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """Weighted FedAvg of every tensor separately (what the encrypted sum computes)."""
    shares = _normalised(weights, len(sites))
    names = sorted(sites[0])
    if any(sorted(site) != names for site in sites):
        raise LayoutError("site adapters hold different tensor names")
    return {
        name: sum(
            (
                share * site[name].to(torch.float64)
                for share, site in zip(shares, sites, strict=True)
            ),
            start=torch.zeros_like(sites[0][name], dtype=torch.float64),
        )
        for name in names
    }


def average_products(
    sites: Sequence[StateDict], weights: Sequence[float], rank: int | None = None
) -> dict[str, torch.Tensor]:
    """Average ``B_k A_k`` per module and refactor to rank ``r`` by truncated SVD.

    The rank defaults to each module's LoRA rank; non-LoRA tensors are averaged as is.
    The singular values are split evenly: ``B = U √S``, ``A = √S Vᵀ``.
    """
    shares = _normalised(weights, len(sites))
    result = average_factors(sites, weights)
    for a_name, b_name in lora_pairs(list(sites[0])).values():
        module_rank = rank if rank is not None else sites[0][a_name].shape[0]
        b_stack = torch.cat(
            [
                share * site[b_name].to(torch.float64)
                for share, site in zip(shares, sites, strict=True)
            ],
            dim=1,
        )
        a_stack = torch.cat([site[a_name].to(torch.float64) for site in sites], dim=0)
        q_b, r_b = torch.linalg.qr(b_stack)
        q_a, r_a = torch.linalg.qr(a_stack.T)
        u, s, vh = torch.linalg.svd(r_b @ r_a.T)
        keep = min(module_rank, s.numel())
        root = torch.sqrt(s[:keep])
        result[b_name] = (q_b @ u[:, :keep]) * root
        result[a_name] = root[:, None] * (vh[:keep] @ q_a.T)
    return result


def product_average_error(
    candidate: StateDict, sites: Sequence[StateDict], weights: Sequence[float]
) -> float:
    """``‖B A − Σ w_k B_k A_k‖_F / ‖Σ w_k B_k A_k‖_F`` summed over all LoRA modules."""
    shares = _normalised(weights, len(sites))
    error_sq = 0.0
    norm_sq = 0.0
    for a_name, b_name in lora_pairs(list(sites[0])).values():
        target = sum(
            (
                share * (site[b_name].to(torch.float64) @ site[a_name].to(torch.float64))
                for share, site in zip(shares, sites, strict=True)
            ),
            start=torch.zeros(
                sites[0][b_name].shape[0], sites[0][a_name].shape[1], dtype=torch.float64
            ),
        )
        product = candidate[b_name].to(torch.float64) @ candidate[a_name].to(torch.float64)
        error_sq += float(torch.linalg.matrix_norm(product - target) ** 2)
        norm_sq += float(torch.linalg.matrix_norm(target) ** 2)
    if norm_sq == 0.0:
        return 0.0 if error_sq == 0.0 else math.inf
    return math.sqrt(error_sq / norm_sq)


@dataclass(frozen=True)
class FactorAveragingReport:
    """Both aggregation rules, side by side."""

    factor_mean_loss: float
    product_svd_loss: float
    factor_mean_error: float
    product_svd_error: float

    @property
    def loss_increase(self) -> float:
        """How much higher the factor-mean eval loss is than the product-SVD one."""
        return self.factor_mean_loss - self.product_svd_loss


def compare_factor_averaging(
    sites: Sequence[StateDict],
    weights: Sequence[float],
    eval_loss: Callable[[StateDict], float],
) -> FactorAveragingReport:
    """Evaluate FedAvg-of-factors against average-of-products (SVD to rank r).

    ``eval_loss`` receives a full adapter state dict (same names and shapes as the
    site adapters, float64) and returns the held-out loss of the model using it.
    """
    factor_mean = average_factors(sites, weights)
    product_svd = average_products(sites, weights)
    return FactorAveragingReport(
        factor_mean_loss=float(eval_loss(factor_mean)),
        product_svd_loss=float(eval_loss(product_svd)),
        factor_mean_error=product_average_error(factor_mean, sites, weights),
        product_svd_error=product_average_error(product_svd, sites, weights),
    )
