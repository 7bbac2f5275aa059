"""Exact 2:4 magnitude pruning of ``nn.Linear`` weights and its verification.

2:4 ("N:M" with N=2, M=4) structured sparsity is the pattern NVIDIA Sparse Tensor
Cores accelerate: in every run of four consecutive weights along the input
dimension (the reduction dimension of ``y = x Wᵀ``) at least two are zero.

Masking rule: in each group of four, the two weights with the largest magnitude
are kept and the other two are set to +0.0. Ties are broken towards the lower input
index (a stable sort), so the mask is a pure function of the weights. Layers whose
``in_features`` is not a multiple of four cannot carry the pattern: pruning them
raises :class:`PruningError` naming the layer, and the caller decides whether to
exclude it. Excluded layers are matched by ``fnmatch`` patterns on the qualified
module name; the default excludes ``lm_head``. Embeddings are ``nn.Embedding``, not
``nn.Linear``, and are never pruned.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tensorguard.hf import TokenBatch, evaluate_token_loss
from tensorguard.optimize.errors import PruningError

GROUP_SIZE = 4
KEPT_PER_GROUP = 2
DEFAULT_EXCLUDE: tuple[str, ...] = ("lm_head",)


@dataclass(frozen=True)
class LayerSparsity:
    """2:4 measurements for one ``nn.Linear`` weight."""

    name: str
    out_features: int
    in_features: int
    zeros: int
    groups: int
    violating_groups: int

    @property
    def total(self) -> int:
        """Number of weights in the layer."""
        return self.out_features * self.in_features

    @property
    def sparsity(self) -> float:
        """Fraction of weights that are exactly zero."""
        return self.zeros / self.total

    @property
    def shape_supports_2_4(self) -> bool:
        """Whether ``in_features`` splits into whole groups of four."""
        return self.in_features % GROUP_SIZE == 0

    @property
    def pattern_exact(self) -> bool:
        """Whether every group of four holds at least two zeros."""
        return self.shape_supports_2_4 and self.violating_groups == 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, for reports and metadata tables."""
        return {
            "name": self.name,
            "shape": [self.out_features, self.in_features],
            "zeros": self.zeros,
            "total": self.total,
            "sparsity": self.sparsity,
            "groups": self.groups,
            "violating_groups": self.violating_groups,
            "pattern_exact": self.pattern_exact,
        }


@dataclass(frozen=True)
class TwoFourReport:
    """2:4 verification of every included ``nn.Linear`` layer of a model."""

    layers: tuple[LayerSparsity, ...]
    excluded: tuple[str, ...]

    @property
    def pattern_exact(self) -> bool:
        """True when there is at least one layer and every layer carries the pattern."""
        return bool(self.layers) and all(layer.pattern_exact for layer in self.layers)

    @property
    def total_weights(self) -> int:
        """Weights in the included layers."""
        return sum(layer.total for layer in self.layers)

    @property
    def zero_weights(self) -> int:
        """Zero weights in the included layers."""
        return sum(layer.zeros for layer in self.layers)

    @property
    def overall_sparsity(self) -> float:
        """Fraction of zero weights over all included layers."""
        total = self.total_weights
        return self.zero_weights / total if total else 0.0

    @property
    def violating_layers(self) -> tuple[str, ...]:
        """Names of the layers that do not carry the pattern."""
        return tuple(layer.name for layer in self.layers if not layer.pattern_exact)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, for reports and metadata tables."""
        return {
            "pattern_exact": self.pattern_exact,
            "overall_sparsity": self.overall_sparsity,
            "total_weights": self.total_weights,
            "zero_weights": self.zero_weights,
            "violating_layers": list(self.violating_layers),
            "excluded": list(self.excluded),
            "layers": [layer.as_dict() for layer in self.layers],
        }


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Return the boolean keep-mask for an ``(out_features, in_features)`` weight.

    In every group of four consecutive input positions exactly two entries are True:
    the two largest magnitudes, ties going to the lower index.
    """
    if weight.dim() != 2:
        raise PruningError(f"2:4 masks apply to 2-D weights, got shape {tuple(weight.shape)}")
    out_features, in_features = weight.shape
    if in_features % GROUP_SIZE:
        raise PruningError(
            f"in_features={in_features} is not a multiple of {GROUP_SIZE}, so the weight "
            "cannot carry a 2:4 pattern; exclude this layer from pruning"
        )
    if not bool(torch.isfinite(weight).all()):
        raise PruningError("weight holds NaN or infinite values; refusing to rank magnitudes")
    magnitudes = weight.detach().abs().reshape(out_features, in_features // GROUP_SIZE, GROUP_SIZE)
    order = torch.argsort(magnitudes, dim=-1, descending=True, stable=True)
    keep = torch.zeros_like(magnitudes, dtype=torch.bool)
    keep.scatter_(-1, order[..., :KEPT_PER_GROUP], True)
    return keep.reshape(out_features, in_features)


def prunable_linear_layers(
    model: nn.Module, exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> list[tuple[str, nn.Linear]]:
    """Return the ``(name, layer)`` pairs that 2:4 pruning applies to, in model order.

    Raises :class:`PruningError` when an exclusion pattern matches no ``nn.Linear``
    (a likely typo) or when an included layer shares its weight with a module that
    is not itself an included ``nn.Linear`` (for example a head tied to the token
    embedding), because pruning it would silently prune the other module too.
    """
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for pattern in exclude:
        if not any(fnmatch.fnmatchcase(name, pattern) for name, _ in linears):
            raise PruningError(
                f"exclusion pattern {pattern!r} matches no nn.Linear module; "
                f"known linear modules include {[name for name, _ in linears[:5]]}"
            )
    included = [(n, m) for n, m in linears if not _is_excluded(n, exclude)]
    included_ids = {id(m) for _, m in included}
    for name, layer in included:
        for owner_name, owner in _owners_of(model, layer.weight):
            if id(owner) not in included_ids:
                raise PruningError(
                    f"{name}.weight is shared with {owner_name or 'the model root'}, which is "
                    f"not pruned; exclude {name!r} (or untie the weights) before 2:4 pruning"
                )
    return included


def apply_2_4_sparsity(model: nn.Module, exclude: Sequence[str] = DEFAULT_EXCLUDE) -> TwoFourReport:
    """Prune every included ``nn.Linear`` in place to exact 2:4 and verify the result.

    All masks are computed before any weight changes, so a layer that cannot be
    pruned leaves the whole model untouched.
    """
    masks: list[tuple[nn.Linear, torch.Tensor]] = []
    for name, layer in prunable_linear_layers(model, exclude):
        try:
            masks.append((layer, two_four_mask(layer.weight)))
        except PruningError as exc:
            raise PruningError(f"cannot 2:4-prune {name}: {exc}") from exc
    with torch.no_grad():
        for layer, keep in masks:
            layer.weight.masked_fill_(~keep, 0.0)
    return verify_2_4(model, exclude)


def verify_2_4(model: nn.Module, exclude: Sequence[str] = DEFAULT_EXCLUDE) -> TwoFourReport:
    """Measure, without changing anything, whether each included layer is exactly 2:4."""
    layers = prunable_linear_layers(model, exclude)
    measured = tuple(_measure_layer(name, layer.weight) for name, layer in layers)
    excluded = tuple(
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear) and _is_excluded(name, exclude)
    )
    return TwoFourReport(layers=measured, excluded=excluded)


def _measure_layer(name: str, weight: torch.Tensor) -> LayerSparsity:
    out_features, in_features = weight.shape
    is_zero = weight.detach() == 0
    zeros = int(is_zero.sum())
    if in_features % GROUP_SIZE:
        return LayerSparsity(name, out_features, in_features, zeros, 0, 0)
    per_group = is_zero.reshape(out_features, in_features // GROUP_SIZE, GROUP_SIZE).sum(dim=-1)
    violating = int((per_group < GROUP_SIZE - KEPT_PER_GROUP).sum())
    return LayerSparsity(name, out_features, in_features, zeros, per_group.numel(), violating)


def _is_excluded(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def _owners_of(model: nn.Module, parameter: torch.Tensor) -> list[tuple[str, nn.Module]]:
    """Every module that holds ``parameter`` directly, tied copies included."""
    return [
        (name, module)
        for name, module in model.named_modules(remove_duplicate=False)
        for own in module.parameters(recurse=False)
        if own is parameter
    ]


@dataclass(frozen=True)
class PruningOutcome:
    """A 2:4 pruning run: the pattern report and the held-out loss around it."""

    report: TwoFourReport
    eval_loss_before: float
    eval_loss_after: float

    @property
    def eval_loss_delta(self) -> float:
        """Loss after pruning minus loss before (positive means pruning hurt)."""
        return self.eval_loss_after - self.eval_loss_before

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, for reports and metadata tables."""
        return {
            "eval_loss_before": self.eval_loss_before,
            "eval_loss_after": self.eval_loss_after,
            "eval_loss_delta": self.eval_loss_delta,
            **self.report.as_dict(),
        }


def prune_2_4_and_evaluate(
    model: nn.Module,
    eval_batches: Sequence[TokenBatch],
    *,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> PruningOutcome:
    """Measure held-out loss, prune ``model`` in place to exact 2:4, measure again.

    The loss is :func:`tensorguard.hf.evaluate_token_loss`, the one used by training
    and the evaluation report, so the numbers compare across stages.

    Raises :class:`PruningError` if the pruned model does not verify as exact 2:4.
    """
    loss_before = evaluate_token_loss(model, eval_batches)
    report = apply_2_4_sparsity(model, exclude)
    if not report.pattern_exact:
        raise PruningError(
            f"2:4 verification failed after pruning for layers {list(report.violating_layers)}"
        )
    loss_after = evaluate_token_loss(model, eval_batches)
    return PruningOutcome(report=report, eval_loss_before=loss_before, eval_loss_after=loss_after)
