"""Tokenise texts and pad them into batches for causal-LM training and evaluation.

The loss over those batches is :mod:`tensorguard.hf`'s (:func:`~tensorguard.hf.token_loss`,
:func:`~tensorguard.hf.evaluate_token_loss`): token-weighted, padding never counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from tensorguard.hf import TokenBatch
from tensorguard.training.errors import TrainingError


def encode_texts(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[list[int]]:
    """Tokenise each text (with the tokenizer's special tokens), truncated to ``max_length``."""
    if not texts:
        raise TrainingError("no texts to tokenise; provide at least one non-empty text")
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    sequences = [list(map(int, ids)) for ids in encoded]
    if all(len(ids) < 2 for ids in sequences):
        raise TrainingError(
            "every text tokenised to fewer than 2 tokens, so there is nothing to predict; "
            "use longer texts or a larger max_length"
        )
    return sequences


def pad_token_id_of(tokenizer: PreTrainedTokenizerBase) -> int:
    """Return the id used for padding: the pad token, else the end-of-sequence token."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(candidate, int):
            return candidate
    raise TrainingError(
        "the tokenizer defines neither a pad token nor an end-of-sequence token; "
        "set pad_token in its tokenizer_config.json"
    )


def pad_batch(sequences: Sequence[Sequence[int]], pad_token_id: int) -> TokenBatch:
    """Right-pad ``sequences`` to the longest one; padding is masked out of the labels."""
    width = max(len(ids) for ids in sequences)
    input_ids = torch.full((len(sequences), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return TokenBatch.from_ids(input_ids, attention_mask)


def batches_in_order(
    sequences: Sequence[Sequence[int]], batch_size: int, pad_token_id: int
) -> Iterator[TokenBatch]:
    """Yield consecutive batches of ``sequences`` in their given order."""
    for start in range(0, len(sequences), batch_size):
        yield pad_batch(sequences[start : start + batch_size], pad_token_id)


def shuffled_batches(
    sequences: Sequence[Sequence[int]],
    batch_size: int,
    pad_token_id: int,
    steps: int,
    generator: torch.Generator,
) -> Iterator[TokenBatch]:
    """Yield ``steps`` batches, walking seeded random permutations epoch after epoch."""
    order: list[int] = []
    for _ in range(steps):
        while len(order) < batch_size:
            order.extend(torch.randperm(len(sequences), generator=generator).tolist())
        chosen, order = order[:batch_size], order[batch_size:]
        yield pad_batch([sequences[index] for index in chosen], pad_token_id)


def perplexity(loss: float) -> float:
    """Return ``exp(loss)``, the perplexity of a mean token loss (``inf`` on overflow)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
