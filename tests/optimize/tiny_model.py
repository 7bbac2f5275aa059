"""A tiny Llama-style base model and a trained LoRA adapter, built locally for tests.

Shared by tests/optimize and tests/moai. Nothing is downloaded: the model is
initialised from a config, and the adapter gets a few real AdamW steps so that its
B matrices are non-zero and merging changes the weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

VOCAB_SIZE = 256
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def tiny_llama_config(**overrides: Any) -> LlamaConfig:
    """Two layers, hidden 64, grouped-query attention, untied head."""
    settings: dict[str, Any] = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": VOCAB_SIZE,
        "max_position_embeddings": 128,
        "tie_word_embeddings": False,
    }
    settings.update(overrides)
    return LlamaConfig(**settings)


def build_tiny_base_model(directory: Path, *, seed: int = 0) -> Path:
    """Initialise and save a tiny LlamaForCausalLM (safetensors)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config())
    model.save_pretrained(directory)
    return directory


def train_tiny_adapter(base_model_dir: Path, directory: Path, *, seed: int = 1) -> Path:
    """Train a rank-4 LoRA adapter for a few steps on random tokens and save it."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM.from_pretrained(base_model_dir, local_files_only=True)
        peft_model = get_peft_model(
            model, LoraConfig(r=4, lora_alpha=8, target_modules=list(LORA_TARGETS))
        )
        optimizer = torch.optim.AdamW(
            [p for p in peft_model.parameters() if p.requires_grad], lr=1e-2
        )
        tokens = torch.randint(0, VOCAB_SIZE, (4, 16))
        for _ in range(3):
            loss = peft_model(input_ids=tokens, labels=tokens).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    peft_model.save_pretrained(str(directory))
    return directory


def token_batches(seed: int, shapes: tuple[tuple[int, int], ...]) -> list[torch.Tensor]:
    """Token-id batches from a private generator."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB_SIZE, shape, generator=generator) for shape in shapes]


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of the tiny base model (config.json + model.safetensors)."""
    return build_tiny_base_model(tmp_path_factory.mktemp("tiny-base"))


@pytest.fixture(scope="session")
def tiny_adapter_dir(tiny_base_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of a LoRA adapter trained on the tiny base model."""
    return train_tiny_adapter(tiny_base_model_dir, tmp_path_factory.mktemp("tiny-adapter"))


@pytest.fixture(scope="session")
def eval_batches() -> list[torch.Tensor]:
    """Held-out token batches for loss measurements."""
    return token_batches(seed=7, shapes=((2, 12), (3, 9)))
