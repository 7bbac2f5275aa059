"""Tokenise texts, pad them into batches and measure causal-LM token loss.

Losses are token-weighted: a batch's loss is the summed next-token cross-entropy over
every predicted (non-padding) token divided by the number of such tokens, and
:func:`mean_token_loss` does the same over a whole text set, so the result does not
depend on the batch size used to compute it.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from tensorguard.training.errors import TrainingError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenBatch:
    """Right-padded token ids with their attention mask and next-token labels."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @property
    def token_count(self) -> int:
        """Number of real (non-padding) tokens in the batch."""
        return int(self.attention_mask.sum().item())


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
    labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
    return TokenBatch(input_ids=input_ids, attention_mask=attention_mask, labels=labels)


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


def token_loss_sum(model: nn.Module, batch: TokenBatch) -> tuple[torch.Tensor, int]:
    """Return (summed next-token cross-entropy, number of predicted tokens) for ``batch``."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    shifted_logits = logits[:, :-1, :].float()
    shifted_labels = batch.labels[:, 1:]
    loss_sum = nn.functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        shifted_labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, int((shifted_labels != IGNORE_INDEX).sum().item())


def mean_token_loss(
    model: nn.Module, sequences: Sequence[Sequence[int]], batch_size: int, pad_token_id: int
) -> float:
    """Return the token-weighted mean next-token loss of ``model`` over ``sequences``."""
    was_training = model.training
    model.eval()
    total = 0.0
    tokens = 0
    with torch.inference_mode():
        for batch in batches_in_order(sequences, batch_size, pad_token_id):
            loss_sum, count = token_loss_sum(model, batch)
            total += float(loss_sum.item())
            tokens += count
    model.train(was_training)
    if tokens == 0:
        raise TrainingError("no predicted tokens to evaluate; provide longer evaluation texts")
    loss = total / tokens
    if not math.isfinite(loss):
        raise TrainingError(f"evaluation loss is not finite ({loss}); the model weights diverged")
    return loss


def perplexity(loss: float) -> float:
    """Return ``exp(loss)``, the perplexity of a mean token loss (``inf`` on overflow)."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf
