"""Accuracy recovery of a 2:4-pruned model with its mask fixed (NVIDIA ASP style).

One-shot magnitude pruning (:mod:`~tensorguard.optimize.pruning`) costs accuracy. The
ASP recipe recovers it by training the pruned model for a while with the sparsity mask
held fixed: after every optimiser step the pruned positions are set back to zero, so
the result still carries the exact 2:4 pattern.

Here the training signal is **distillation from the dense merged model** (the teacher)
into the pruned one (the student): the student's next-token distribution is pulled
towards the teacher's by the KL divergence, on every real (non-padding) position of
batches of **public** text, the corpus that ships with TensorGuard
(``tensorguard/data/corpus``, :func:`corpus_batches`). No site's data and no held-out
text is used: the teacher carries what the federation learnt, the corpus only supplies
inputs to compare the two models on.

:func:`prune_and_recover` runs the whole step: held-out loss of the dense model, 2:4
pruning, loss of the pruned model, recovery, loss of the recovered model.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tensorguard.hf import TokenBatch, evaluate_token_loss
from tensorguard.optimize.errors import PruningError
from tensorguard.optimize.pruning import (
    DEFAULT_EXCLUDE,
    PruningOutcome,
    TwoFourReport,
    prunable_linear_layers,
    prune_2_4_and_evaluate,
    verify_2_4,
)
from tensorguard.optimize.recovery_settings import RecoverySettings as RecoverySettings
from tensorguard.training.base_model import load_tokenizer, read_corpus
from tensorguard.training.causal_lm import encode_texts, pad_token_id_of, shuffled_batches
from tensorguard.training.demo_data import default_corpus_dir
from tensorguard.training.train_loop import limit_torch_threads


@dataclass(frozen=True)
class RecoveryOutcome:
    """What a recovery run did: steps, time, the distillation loss and the 2:4 report."""

    steps: int
    seconds: float
    first_distillation_loss: float | None
    last_distillation_loss: float | None
    report: TwoFourReport

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, for reports and metadata."""
        return {
            "steps": self.steps,
            "seconds": self.seconds,
            "first_distillation_loss": self.first_distillation_loss,
            "last_distillation_loss": self.last_distillation_loss,
            "pattern_exact": self.report.pattern_exact,
        }


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Mean KL(teacher ‖ student) of the next-token distributions over real positions.

    Positions whose attention mask is 0 (padding) do not count. The result is scaled
    by ``temperature²`` so that its gradient keeps the same magnitude at any temperature.
    """
    real = attention_mask.bool()
    if not bool(real.any()):
        raise PruningError("a distillation batch holds no real token (all padding)")
    student = torch.log_softmax(student_logits[real].float() / temperature, dim=-1)
    teacher = torch.log_softmax(teacher_logits[real].float() / temperature, dim=-1)
    kl = nn.functional.kl_div(student, teacher, log_target=True, reduction="batchmean")
    return kl * temperature**2


def fixed_masks(
    model: nn.Module, exclude: Sequence[str] = DEFAULT_EXCLUDE
) -> list[tuple[str, nn.Linear, torch.Tensor]]:
    """The keep-mask (non-zero positions) of every prunable layer of a 2:4-pruned model.

    Raises :class:`PruningError` when the model does not carry the exact 2:4 pattern:
    recovery keeps a mask, it does not make one.
    """
    report = verify_2_4(model, exclude)
    if not report.pattern_exact:
        raise PruningError(
            "sparse recovery needs an exactly 2:4-pruned model; layers without the pattern: "
            f"{list(report.violating_layers) or 'no prunable layer'}"
        )
    return [
        (name, layer, layer.weight.detach() != 0)
        for name, layer in prunable_linear_layers(model, exclude)
    ]


def recover_2_4(
    student: nn.Module,
    teacher: nn.Module,
    batches: Iterable[TokenBatch],
    *,
    settings: RecoverySettings | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> RecoveryOutcome:
    """Distil ``teacher`` into the 2:4-pruned ``student`` in place, its mask held fixed.

    Trains every parameter of ``student`` with AdamW for ``settings.steps`` batches
    (fewer if ``batches`` runs out) and re-applies the mask after every step, so the
    student is exact 2:4 again after each update. ``teacher`` is only read. Raises
    :class:`PruningError` when the student is not exact 2:4 at the start or the end,
    or when the distillation loss stops being finite.
    """
    settings = settings or RecoverySettings()
    masks = fixed_masks(student, exclude)
    started = time.perf_counter()
    losses: list[float] = []
    if settings.steps:
        was_training = student.training
        requires_grad = {id(p): p.requires_grad for p in student.parameters()}
        student.train()
        teacher.eval()
        student.requires_grad_(True)
        optimizer = torch.optim.AdamW(
            student.parameters(), lr=settings.learning_rate, weight_decay=0.0
        )
        try:
            with limit_torch_threads(settings.threads):
                for step, batch in enumerate(batches):
                    if step >= settings.steps:
                        break
                    losses.append(_distillation_step(student, teacher, batch, optimizer, settings))
                    with torch.no_grad():
                        for _, layer, keep in masks:
                            layer.weight.mul_(keep)
        finally:
            student.train(was_training)
            for parameter in student.parameters():
                parameter.requires_grad_(requires_grad[id(parameter)])
    report = verify_2_4(student, exclude)
    if not report.pattern_exact:
        raise PruningError(
            f"2:4 pattern lost during recovery in layers {list(report.violating_layers)}"
        )
    return RecoveryOutcome(
        steps=len(losses),
        seconds=time.perf_counter() - started,
        first_distillation_loss=losses[0] if losses else None,
        last_distillation_loss=losses[-1] if losses else None,
        report=report,
    )


def _distillation_step(
    student: nn.Module,
    teacher: nn.Module,
    batch: TokenBatch,
    optimizer: torch.optim.Optimizer,
    settings: RecoverySettings,
) -> float:
    with torch.no_grad():
        teacher_logits = teacher(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        ).logits
    student_logits = student(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    loss = distillation_loss(
        student_logits, teacher_logits, batch.attention_mask, settings.temperature
    )
    if not bool(torch.isfinite(loss)):
        raise PruningError(
            f"the distillation loss became {float(loss)}; lower the recovery learning rate "
            f"(now {settings.learning_rate})"
        )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.item())


def corpus_batches(
    base_model_dir: Path,
    settings: RecoverySettings | None = None,
    corpus_dir: Path | None = None,
) -> Iterator[TokenBatch]:
    """Seeded, shuffled batches of the public corpus, tokenised with the base model's
    tokenizer: ``settings.steps`` batches of ``settings.batch_size`` sequences.

    ``corpus_dir`` defaults to the corpus shipped with TensorGuard; it must hold
    ``*.jsonl`` text records in the documented schema (docs/DATA.md), never site data.
    """
    settings = settings or RecoverySettings()
    tokenizer = load_tokenizer(base_model_dir)
    texts, _ = read_corpus(corpus_dir or default_corpus_dir())
    sequences = encode_texts(tokenizer, texts, settings.max_length)
    generator = torch.Generator().manual_seed(settings.seed)
    return shuffled_batches(
        sequences, settings.batch_size, pad_token_id_of(tokenizer), settings.steps, generator
    )


@dataclass(frozen=True)
class RecoveredPruning:
    """Held-out loss of the dense model, after 2:4 pruning, and after recovery."""

    pruning: PruningOutcome
    recovery: RecoveryOutcome
    eval_loss_recovered: float

    @property
    def eval_loss_dense(self) -> float:
        """Held-out loss of the dense merged model."""
        return self.pruning.eval_loss_before

    @property
    def eval_loss_pruned(self) -> float:
        """Held-out loss right after one-shot 2:4 pruning."""
        return self.pruning.eval_loss_after

    @property
    def relative_increase(self) -> float:
        """(recovered − dense) / dense: what the shipped sparse model costs."""
        return (self.eval_loss_recovered - self.eval_loss_dense) / self.eval_loss_dense

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, for reports and metadata."""
        return {
            "eval_loss_dense": self.eval_loss_dense,
            "eval_loss_pruned": self.eval_loss_pruned,
            "eval_loss_recovered": self.eval_loss_recovered,
            "relative_increase": self.relative_increase,
            "recovery": self.recovery.as_dict(),
            **self.recovery.report.as_dict(),
        }


def prune_and_recover(
    model: nn.Module,
    eval_batches: Sequence[TokenBatch],
    training_batches: Iterable[TokenBatch],
    *,
    settings: RecoverySettings | None = None,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
) -> RecoveredPruning:
    """Prune ``model`` in place to exact 2:4, then recover it by distillation from a
    copy of its dense self on ``training_batches``; measure the held-out loss of the
    dense, pruned and recovered model on ``eval_batches`` (used only to measure)."""
    teacher = copy.deepcopy(model).eval()
    pruning = prune_2_4_and_evaluate(model, eval_batches, exclude=exclude)
    recovery = recover_2_4(model, teacher, training_batches, settings=settings, exclude=exclude)
    del teacher
    recovered = evaluate_token_loss(model, eval_batches)
    return RecoveredPruning(pruning=pruning, recovery=recovery, eval_loss_recovered=recovered)
