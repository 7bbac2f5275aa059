"""Held-out evaluation sets: padding, identity and batch-size independence."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tensorguard.held_out import HeldOutSet


def _held_out(sequences: tuple[tuple[int, ...], ...]) -> HeldOutSet:
    return HeldOutSet(site_ids=("a", "b"), sequences=sequences, pad_token_id=0, max_length=16)


def test_batches_are_right_padded_with_the_pad_id() -> None:
    [batch] = _held_out(((5, 6, 7), (8, 9))).token_batches(batch_size=4)
    assert batch.tolist() == [[5, 6, 7], [8, 9, 0]]


def test_digest_identifies_the_sequences() -> None:
    first = _held_out(((5, 6, 7), (8, 9)))
    assert first.digest == _held_out(((5, 6, 7), (8, 9))).digest
    assert first.digest != _held_out(((5, 6, 7), (8, 10))).digest


def test_loss_does_not_depend_on_batch_size() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(config)
    held_out = _held_out(((1, 2, 3, 4), (5, 6), (7, 8, 9), (10, 11, 12, 13, 14)))
    assert held_out.loss(model, batch_size=1) == pytest.approx(
        held_out.loss(model, batch_size=3), rel=1e-5
    )
