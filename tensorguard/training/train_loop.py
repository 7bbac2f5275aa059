"""The shared optimisation loop: AdamW over a model's trainable parameters.

Used both to pretrain the built-in base model and to train LoRA adapters, so both
report their loss curve, throughput and progress the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from tensorguard.hf import token_loss
from tensorguard.training.causal_lm import shuffled_batches
from tensorguard.training.errors import TrainingError

ProgressCallback = Callable[[str], None]


@dataclass(frozen=True)
class LoopSettings:
    """How long and how fast to optimise."""

    steps: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    seed: int
    log_every: int
    label: str


@dataclass(frozen=True)
class LoopStats:
    """What one run of the loop did."""

    loss_curve: tuple[float, ...]
    tokens_processed: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        """Real (non-padding) tokens processed per second of optimisation."""
        return self.tokens_processed / self.seconds if self.seconds > 0 else 0.0


def run_training_loop(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    pad_token_id: int,
    settings: LoopSettings,
    progress: ProgressCallback | None = None,
) -> LoopStats:
    """Optimise ``model``'s trainable parameters on ``sequences``; return the loss curve.

    Each step draws ``batch_size`` sequences from a permutation seeded by
    ``settings.seed`` and takes one AdamW step on the token-weighted mean loss.
    A non-finite loss stops training with :class:`TrainingError`.
    """
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not parameters:
        raise TrainingError(f"{settings.label}: the model has no trainable parameters")
    optimizer = torch.optim.AdamW(
        parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay
    )
    generator = torch.Generator().manual_seed(settings.seed)
    batches = shuffled_batches(
        sequences, settings.batch_size, pad_token_id, settings.steps, generator
    )
    model.train()
    losses: list[float] = []
    tokens = 0
    started = time.perf_counter()
    for step, batch in enumerate(batches, start=1):
        loss_sum, predicted = token_loss(model, batch)
        loss = loss_sum / max(predicted, 1)
        value = float(loss.item())
        if not math.isfinite(value):
            raise TrainingError(
                f"{settings.label}: loss became {value} at step {step}; lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        losses.append(value)
        tokens += batch.token_count
        if progress is not None and (step % settings.log_every == 0 or step == settings.steps):
            progress(f"{settings.label}: step {step}/{settings.steps} loss {value:.4f}")
    return LoopStats(
        loss_curve=tuple(losses),
        tokens_processed=tokens,
        seconds=time.perf_counter() - started,
    )


@contextmanager
def limit_torch_threads(threads: int | None) -> Iterator[None]:
    """Run the body with ``threads`` torch intra-op threads, then restore the setting.

    ``None`` leaves the process setting alone. Small models train fastest on one
    thread, and on a busy machine extra threads spin-wait for cores they cannot get.
    """
    if threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
