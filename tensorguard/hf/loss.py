"""Next-token loss of a causal language model: one computation for every caller.

:func:`token_loss` returns the summed next-token cross-entropy of one batch and the
number of tokens it predicted; :func:`evaluate_token_loss` divides the sums over many
batches by the total count. Padding never counts: a target is ignored where the
attention mask is 0 or the label is ``-100``, so a padded batch gives the loss of its
unpadded sequences and the mean does not depend on how the data was batched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from tensorguard.training.errors import TrainingError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class TokenBatch:
    """Token ids with their attention mask (1: real token) and next-token labels."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    @classmethod
    def from_ids(cls, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TokenBatch:
        """A batch whose labels are its ids, with masked-out positions set to ``-100``."""
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)
        return cls(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

    @classmethod
    def unpadded(cls, input_ids: torch.Tensor) -> TokenBatch:
        """A batch of equal-length sequences without padding: every position is real."""
        return cls.from_ids(input_ids, torch.ones_like(input_ids))

    @property
    def token_count(self) -> int:
        """Number of real (non-padding) tokens in the batch."""
        return int(self.attention_mask.sum().item())


def token_loss(model: nn.Module, batch: TokenBatch) -> tuple[torch.Tensor, int]:
    """Return (summed next-token cross-entropy, number of predicted tokens) for ``batch``.

    Position ``t`` predicts label ``t + 1``. The sum keeps its autograd graph, so
    training divides it by the count and back-propagates.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    targets = batch.labels.masked_fill(batch.attention_mask == 0, IGNORE_INDEX)[:, 1:]
    shifted_logits = logits[:, :-1, :].float()
    loss_sum = nn.functional.cross_entropy(
        shifted_logits.reshape(-1, shifted_logits.size(-1)),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return loss_sum, int((targets != IGNORE_INDEX).sum().item())


def evaluate_token_loss(model: nn.Module, batches: Iterable[TokenBatch]) -> float:
    """Return the token-weighted mean next-token loss of ``model`` over ``batches``.

    Runs in eval mode without gradients and restores the model's training mode.
    Raises :class:`~tensorguard.training.errors.TrainingError` when no token is
    predicted or the loss is not finite.
    """
    was_training = model.training
    model.eval()
    total = 0.0
    tokens = 0
    try:
        with torch.inference_mode():
            for batch in batches:
                loss_sum, count = token_loss(model, batch)
                total += float(loss_sum.item())
                tokens += count
    finally:
        model.train(was_training)
    if tokens == 0:
        raise TrainingError(
            "no predicted tokens to evaluate: provide sequences of two or more non-padding tokens"
        )
    loss = total / tokens
    if not math.isfinite(loss):
        raise TrainingError(f"evaluation loss is not finite ({loss}); the model weights diverged")
    return loss
