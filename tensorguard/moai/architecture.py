"""The linear modules a checkpoint must contain, read from its model configuration.

The configured architecture is instantiated on PyTorch's ``meta`` device (no
memory, no weights), so module names, shapes and biases are exactly what
transformers builds for that ``config.json`` rather than a hand-written table per
architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from tensorguard.moai.errors import MoaiExportError

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class LinearModuleSpec:
    """What the architecture says one ``nn.Linear`` module looks like."""

    name: str
    out_features: int
    in_features: int
    has_bias: bool

    @property
    def weight_key(self) -> str:
        """State-dict key of the weight."""
        return f"{self.name}.weight"

    @property
    def bias_key(self) -> str:
        """State-dict key of the bias (present only when :attr:`has_bias`)."""
        return f"{self.name}.bias"


def linear_modules(config_dir: Path) -> dict[str, LinearModuleSpec]:
    """Map each ``nn.Linear`` module name of the configured causal LM to its spec."""
    config_path = config_dir / CONFIG_FILE
    if not config_path.is_file():
        raise MoaiExportError(
            f"model configuration not found: {config_path}; pass the directory that holds "
            "the base model's config.json"
        )
    try:
        config = AutoConfig.from_pretrained(config_dir, local_files_only=True)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)  # type: ignore[no-untyped-call]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise MoaiExportError(
            f"cannot build the architecture described by {config_path}: {exc}"
        ) from exc
    return {
        name: LinearModuleSpec(
            name, module.out_features, module.in_features, module.bias is not None
        )
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
    }


def select_modules(
    specs: dict[str, LinearModuleSpec], patterns: tuple[str, ...] | list[str]
) -> list[LinearModuleSpec]:
    """Resolve target patterns to linear modules, in sorted name order.

    A pattern selects a module when it equals the module's qualified name or a
    dotted suffix of it (``"q_proj"`` and ``"self_attn.q_proj"`` both select
    ``model.layers.0.self_attn.q_proj``). A pattern that selects nothing is an error.
    """
    if not patterns:
        raise MoaiExportError("no target modules given; name at least one linear module")
    chosen: dict[str, LinearModuleSpec] = {}
    for pattern in patterns:
        matches = [spec for name, spec in specs.items() if _selects(pattern, name)]
        if not matches:
            raise MoaiExportError(
                f"target module {pattern!r} matches no linear module of the architecture; "
                f"linear modules include {sorted(specs)[:6]}"
            )
        chosen.update((spec.name, spec) for spec in matches)
    return [chosen[name] for name in sorted(chosen)]


def _selects(pattern: str, name: str) -> bool:
    return name == pattern or name.endswith(f".{pattern}")
