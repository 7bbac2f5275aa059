"""Held-out evaluation of release candidates: base model, adapters, merged models.

The release is judged on the sites' held-out ``eval.jsonl`` texts. In a deployment
each site computes its loss locally and reports only the number; on one machine (the
demo, the tests) the same computation runs over every site's held-out file.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import PeftModel

from tensorguard.digest import sha256_bytes
from tensorguard.hf import TokenBatch, evaluate_token_loss, load_adapter, load_causal_lm
from tensorguard.training.base_model import load_tokenizer
from tensorguard.training.causal_lm import batches_in_order, encode_texts, pad_token_id_of
from tensorguard.training.dataset import load_site_dataset

EVAL_MAX_LENGTH = 64
EVAL_BATCH_SIZE = 16


@dataclass(frozen=True)
class HeldOutSet:
    """Held-out texts of one or more sites, tokenised for one base model."""

    site_ids: tuple[str, ...]
    sequences: tuple[tuple[int, ...], ...]
    pad_token_id: int
    max_length: int

    @property
    def digest(self) -> str:
        """SHA-256 of the token sequences: equal digests mean the same held-out set."""
        return sha256_bytes(json.dumps([self.max_length, self.sequences]).encode())

    def loss(self, model: torch.nn.Module, batch_size: int = EVAL_BATCH_SIZE) -> float:
        """Token-weighted mean next-token loss of ``model`` on this set."""
        return evaluate_token_loss(model, self.token_batches(batch_size))

    def token_batches(self, batch_size: int = EVAL_BATCH_SIZE) -> list[TokenBatch]:
        """The sequences as right-padded batches whose attention masks mark the real
        tokens, so a real token equal to the pad id (pad = EOS) still counts."""
        return list(batches_in_order(self.sequences, batch_size, self.pad_token_id))


def load_held_out_set(
    base_model_dir: Path,
    site_dirs: dict[str, Path],
    max_length: int = EVAL_MAX_LENGTH,
) -> HeldOutSet:
    """Tokenise every site's ``eval.jsonl`` with the base model's tokenizer."""
    tokenizer = load_tokenizer(base_model_dir)
    texts: list[str] = []
    for site_id in sorted(site_dirs):
        texts.extend(load_site_dataset(site_dirs[site_id]).eval_texts)
    sequences = encode_texts(tokenizer, texts, max_length)
    return HeldOutSet(
        site_ids=tuple(sorted(site_dirs)),
        sequences=tuple(tuple(ids) for ids in sequences),
        pad_token_id=pad_token_id_of(tokenizer),
        max_length=max_length,
    )


def load_with_adapter(base_model_dir: Path, adapter_dir: Path) -> PeftModel:
    """The base model (float32) with a PEFT adapter loaded, for inference only."""
    return load_adapter(
        load_causal_lm(base_model_dir, dtype=torch.float32), adapter_dir, trainable=False
    )


def losses_by_name(
    held_out: HeldOutSet, models: Sequence[tuple[str, torch.nn.Module]]
) -> dict[str, float]:
    """Held-out loss of each named model."""
    return {name: held_out.loss(model) for name, model in models}
