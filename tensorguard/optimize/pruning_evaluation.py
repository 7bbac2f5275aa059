"""Held-out next-token loss of a causal language model over batches of token ids.

Pruning measures it before and after
(:func:`~tensorguard.optimize.pruning.prune_2_4_and_evaluate`); the held-out set comes
from :mod:`tensorguard.held_out`.

The loss itself is :func:`tensorguard.hf.evaluate_token_loss`; this module turns plain
``(batch, sequence)`` id tensors, as the deployment steps hold them, into masked batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from tensorguard.hf import TokenBatch, evaluate_token_loss
from tensorguard.optimize.errors import EvaluationError


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
    return evaluate_token_loss(model, _masked_batches(batches, pad_token_id))


def _masked_batches(
    batches: Iterable[torch.Tensor], pad_token_id: int | None
) -> Iterator[TokenBatch]:
    for index, input_ids in enumerate(batches):
        if input_ids.dim() != 2 or input_ids.dtype not in (torch.int32, torch.int64):
            raise EvaluationError(
                f"evaluation batch {index} must be a 2-D integer tensor of token ids, got "
                f"dtype {input_ids.dtype} and shape {tuple(input_ids.shape)}"
            )
        if pad_token_id is None:
            attention_mask = torch.ones_like(input_ids)
        else:
            attention_mask = (input_ids != pad_token_id).to(input_ids.dtype)
        yield TokenBatch.from_ids(input_ids, attention_mask)
