"""Held-out evaluation sets: padding, identity, batch-size independence, and one loss
for the evaluation report and pruning, also when the tokenizer pads with EOS."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tensorguard.held_out import HeldOutSet
from tensorguard.hf import evaluate_token_loss
from tensorguard.optimize import prune_2_4_and_evaluate


def _held_out(sequences: tuple[tuple[int, ...], ...]) -> HeldOutSet:
    return HeldOutSet(site_ids=("a", "b"), sequences=sequences, pad_token_id=0, max_length=16)


def test_batches_are_right_padded_with_the_pad_id() -> None:
    [batch] = _held_out(((5, 6, 7), (8, 9))).token_batches(batch_size=4)
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 9, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]


def test_digest_identifies_the_sequences() -> None:
    first = _held_out(((5, 6, 7), (8, 9)))
    assert first.digest == _held_out(((5, 6, 7), (8, 9))).digest
    assert first.digest != _held_out(((5, 6, 7), (8, 10))).digest


def _tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=32,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config)


def test_loss_does_not_depend_on_batch_size() -> None:
    model = _tiny_model()
    held_out = _held_out(((1, 2, 3, 4), (5, 6), (7, 8, 9), (10, 11, 12, 13, 14)))
    assert held_out.loss(model, batch_size=1) == pytest.approx(
        held_out.loss(model, batch_size=3), rel=1e-5
    )


# pad id 0 is also the end-of-sequence token that ends every text, as with tokenizers
# that pad with EOS: those real EOS tokens must be predicted and counted.
EOS_PADDED = ((1, 2, 3, 0), (5, 0), (7, 8, 9, 10, 11, 0))


def test_real_tokens_equal_to_the_pad_id_still_count() -> None:
    held_out = _held_out(EOS_PADDED)
    [batch] = held_out.token_batches(batch_size=3)
    assert batch.token_count == sum(len(ids) for ids in EOS_PADDED)
    # unpadded (one sequence per batch) and padded batches give the same loss only if
    # the EOS tokens are told apart from the padding by the attention mask
    assert held_out.loss(_tiny_model(), batch_size=1) == pytest.approx(
        held_out.loss(_tiny_model(), batch_size=3), rel=1e-5
    )


def test_pruning_and_the_report_measure_the_same_loss() -> None:
    held_out = _held_out(EOS_PADDED)
    model = _tiny_model()
    report_loss = held_out.loss(model)
    outcome = prune_2_4_and_evaluate(model, held_out.token_batches(), exclude=("lm_head",))
    assert outcome.eval_loss_before == pytest.approx(report_loss, rel=1e-6)
    assert outcome.eval_loss_after == pytest.approx(held_out.loss(model), rel=1e-6)
    assert evaluate_token_loss(model, held_out.token_batches()) == outcome.eval_loss_after
