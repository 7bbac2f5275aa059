"""A larger standard Llama-layout checkpoint for the convergence benchmark.

``bench_convergence.py --model llama`` needs a model that is bigger than the demo's
default base model but still trains on a CPU: a randomly initialised
``LlamaForCausalLM`` with the project's tokenizer (the byte-level BPE the default
builder trains on the shipped corpus) and a standard Llama layout (RMSNorm, rotary
positions, SwiGLU MLP, multi-head attention), pretrained briefly on the shipped corpus.
The checkpoint is cached: a directory whose recorded recipe equals the requested one is
reused, anything else is rebuilt (atomically).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tensorguard.durable import atomic_directory
from tensorguard.training.base_model import (
    DEFAULT_MAX_POSITIONS,
    DEFAULT_VOCAB_SIZE,
    PRETRAIN_BATCH_SIZE,
    PRETRAIN_MAX_LENGTH,
    PRETRAIN_WEIGHT_DECAY,
    read_corpus,
)
from tensorguard.training.causal_lm import encode_texts, pad_token_id_of
from tensorguard.training.demo_data import default_corpus_dir
from tensorguard.training.tokenizer_training import train_bpe_tokenizer
from tensorguard.training.train_loop import LoopSettings, limit_torch_threads, run_training_loop

RECIPE_FILE = "bench_checkpoint.json"


@dataclass(frozen=True)
class LlamaRecipe:
    """Shape and pretraining of the checkpoint (its cache key)."""

    hidden_size: int = 192
    intermediate_size: int = 512
    layers: int = 4
    attention_heads: int = 6
    pretrain_steps: int = 300
    pretrain_learning_rate: float = 2e-3
    seed: int = 0
    torch_threads: int = 1

    def config(
        self, vocab_size: int, pad: int | None, bos: int | None, eos: int | None
    ) -> LlamaConfig:
        """The transformers configuration of this shape."""
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.layers,
            num_attention_heads=self.attention_heads,
            num_key_value_heads=self.attention_heads,
            max_position_embeddings=DEFAULT_MAX_POSITIONS,
            tie_word_embeddings=True,
            pad_token_id=pad,
            bos_token_id=bos,
            eos_token_id=eos,
            architectures=["LlamaForCausalLM"],
        )


def build_larger_checkpoint(
    out_dir: Path, recipe: LlamaRecipe, progress: Callable[[str], None] = print
) -> dict[str, object]:
    """Build (or reuse) the checkpoint in ``out_dir``; return its recorded recipe and
    pretraining summary."""
    recorded = out_dir / RECIPE_FILE
    _, corpus_digest = read_corpus(default_corpus_dir())
    wanted = {"recipe": asdict(recipe), "corpus_digest": corpus_digest}
    if recorded.is_file():
        summary: dict[str, object] = json.loads(recorded.read_text())
        if {k: summary.get(k) for k in wanted} == wanted:
            progress(f"reusing the cached checkpoint {out_dir}")
            return summary
        progress(f"{out_dir} was built from another recipe; rebuilding it")
    texts, _ = read_corpus(default_corpus_dir())
    with torch.random.fork_rng(devices=[]), limit_torch_threads(recipe.torch_threads):
        torch.manual_seed(recipe.seed)
        tokenizer = train_bpe_tokenizer(texts, DEFAULT_VOCAB_SIZE, DEFAULT_MAX_POSITIONS)
        model = LlamaForCausalLM(
            recipe.config(
                len(tokenizer),
                tokenizer.pad_token_id,
                tokenizer.bos_token_id,
                tokenizer.eos_token_id,
            )
        )
        parameters = sum(p.numel() for p in model.parameters())
        progress(f"pretraining a {parameters:,}-parameter Llama for {recipe.pretrain_steps} steps")
        stats = run_training_loop(
            model,
            encode_texts(tokenizer, texts, PRETRAIN_MAX_LENGTH),
            pad_token_id_of(tokenizer),
            LoopSettings(
                steps=recipe.pretrain_steps,
                batch_size=PRETRAIN_BATCH_SIZE,
                learning_rate=recipe.pretrain_learning_rate,
                weight_decay=PRETRAIN_WEIGHT_DECAY,
                seed=recipe.seed,
                log_every=25,
                label="larger checkpoint pretraining",
            ),
            progress,
        )
    summary = wanted | {
        "parameters": parameters,
        "pretrain_loss_first": stats.loss_curve[0],
        "pretrain_loss_last": stats.loss_curve[-1],
        "pretrain_seconds": stats.seconds,
    }
    with atomic_directory(out_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / RECIPE_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary
