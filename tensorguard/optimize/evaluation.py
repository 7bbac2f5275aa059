"""Held-out next-token loss of a causal language model."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as functional
from torch import nn

from tensorguard.optimize.errors import EvaluationError

IGNORE_INDEX = -100


def evaluate_causal_lm_loss(
    model: nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    pad_token_id: int | None = None,
) -> float:
    """Return the token-weighted mean next-token cross-entropy over ``batches``.

    Each batch is a ``(batch, sequence)`` tensor of token ids. Position ``t`` predicts
    token ``t + 1``; when ``pad_token_id`` is given, padded positions are masked out
    of attention and of the loss. Every target token counts once, whatever the batch
    sizes, so the result does not depend on how the data was batched.
    """
    total_loss = 0.0
    total_tokens = 0
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for index, input_ids in enumerate(batches):
                batch_loss, batch_tokens = _batch_loss(model, input_ids, pad_token_id, index)
                total_loss += batch_loss
                total_tokens += batch_tokens
    finally:
        model.train(was_training)
    if total_tokens == 0:
        raise EvaluationError(
            "no target tokens to evaluate: pass at least one batch with sequences of "
            "two or more non-padding tokens"
        )
    mean = total_loss / total_tokens
    if not math.isfinite(mean):
        raise EvaluationError(f"evaluation loss is not finite ({mean}); the model diverged")
    return mean


def _batch_loss(
    model: nn.Module, input_ids: torch.Tensor, pad_token_id: int | None, index: int
) -> tuple[float, int]:
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
        raise EvaluationError(
            f"evaluation batch {index} must be a 2-D integer tensor of token ids, got "
            f"dtype {input_ids.dtype} and shape {tuple(input_ids.shape)}"
        )
    if pad_token_id is None:
        attention_mask = torch.ones_like(input_ids)
    else:
        attention_mask = (input_ids != pad_token_id).to(input_ids.dtype)
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    targets = input_ids[:, 1:].masked_fill(attention_mask[:, 1:] == 0, IGNORE_INDEX)
    loss_sum = functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="sum",
    )
    return float(loss_sum), int((targets != IGNORE_INDEX).sum())
