"""The module names a Llama-style model's LoRA adapters target by default (no torch).

Kept apart from :mod:`~tensorguard.training.lora` so that configuration defaults (the
Dagster ``round_spec`` config) can name them without importing torch or peft.
"""

from __future__ import annotations

LLAMA_ATTENTION_AND_MLP = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
"""Every attention projection and MLP projection of a Llama decoder layer."""
