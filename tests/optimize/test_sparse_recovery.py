"""Sparse recovery: distillation into a 2:4-pruned model with its mask held fixed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from tensorguard.hf import TokenBatch, evaluate_token_loss
from tensorguard.optimize.errors import PruningError
from tensorguard.optimize.merge import merge_adapter
from tensorguard.optimize.pruning import apply_2_4_sparsity, prunable_linear_layers, verify_2_4
from tensorguard.optimize.sparse_recovery import (
    RecoverySettings,
    corpus_batches,
    distillation_loss,
    prune_and_recover,
    recover_2_4,
)
from tensorguard.training.tokenizer_training import train_bpe_tokenizer
from tests.optimize.tiny_model import VOCAB_SIZE, token_batches


def random_training_batches(count: int, seed: int = 11) -> list[TokenBatch]:
    """Token batches the recovery trains on (stand-ins for the public corpus)."""
    return [
        TokenBatch.from_ids(ids, torch.ones_like(ids))
        for ids in token_batches(seed, ((8, 16),) * count)
    ]


def gap_to_teacher(
    student: torch.nn.Module, teacher: torch.nn.Module, batches: list[torch.Tensor]
) -> float:
    """Mean distillation loss of ``student`` against ``teacher`` on held-out batches."""
    with torch.no_grad():
        return sum(
            float(distillation_loss(student(ids).logits, teacher(ids).logits, torch.ones_like(ids)))
            for ids in batches
        ) / len(batches)


def test_recovery_brings_the_student_closer_the_held_out_loss_and_keeps_the_exact_mask(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, eval_batches: list[torch.Tensor]
) -> None:
    model = merge_adapter(tiny_base_model_dir, tiny_adapter_dir)
    teacher = copy.deepcopy(model)
    apply_2_4_sparsity(model)
    masks_before = {name: layer.weight != 0 for name, layer in prunable_linear_layers(model)}
    pruned_gap = gap_to_teacher(model, teacher, eval_batches)
    settings = RecoverySettings(steps=30, learning_rate=1e-3)
    outcome = recover_2_4(model, teacher, random_training_batches(40), settings=settings)
    assert outcome.steps == 30
    assert outcome.report.pattern_exact
    assert verify_2_4(model).pattern_exact
    for name, layer in prunable_linear_layers(model):
        assert not bool((layer.weight[~masks_before[name]] != 0).any()), name
    assert outcome.first_distillation_loss is not None
    assert outcome.last_distillation_loss is not None
    assert gap_to_teacher(model, teacher, eval_batches) < pruned_gap * 0.8


def test_prune_and_recover_reports_dense_pruned_and_recovered_losses(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path, eval_batches: list[torch.Tensor]
) -> None:
    model = merge_adapter(tiny_base_model_dir, tiny_adapter_dir)
    held_out = [TokenBatch.unpadded(ids) for ids in eval_batches]
    dense = evaluate_token_loss(copy.deepcopy(model), held_out)
    result = prune_and_recover(
        model,
        held_out,
        random_training_batches(10),
        settings=RecoverySettings(steps=10, learning_rate=3e-3),
    )
    assert result.eval_loss_dense == pytest.approx(dense, rel=1e-6)
    assert result.eval_loss_recovered == pytest.approx(
        evaluate_token_loss(model, held_out), rel=1e-6
    )
    assert result.eval_loss_recovered != result.eval_loss_pruned
    assert result.relative_increase == pytest.approx(
        (result.eval_loss_recovered - dense) / dense, rel=1e-6
    )
    assert json.loads(json.dumps(result.as_dict()))["recovery"]["steps"] == 10


def test_zero_steps_leave_the_pruned_model_unchanged(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    model = merge_adapter(tiny_base_model_dir, tiny_adapter_dir)
    teacher = copy.deepcopy(model)
    apply_2_4_sparsity(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    outcome = recover_2_4(
        model, teacher, random_training_batches(3), settings=RecoverySettings(steps=0)
    )
    assert outcome.steps == 0
    assert outcome.last_distillation_loss is None
    for key, tensor in model.state_dict().items():
        assert torch.equal(before[key], tensor), key


def test_a_model_that_is_not_2_4_is_refused(
    tiny_base_model_dir: Path, tiny_adapter_dir: Path
) -> None:
    model = merge_adapter(tiny_base_model_dir, tiny_adapter_dir)
    with pytest.raises(PruningError, match="exactly 2:4-pruned"):
        recover_2_4(model, copy.deepcopy(model), random_training_batches(1))


def test_distillation_loss_ignores_padding_and_vanishes_for_equal_models() -> None:
    generator = torch.Generator().manual_seed(3)
    student = torch.randn(2, 5, VOCAB_SIZE, generator=generator)
    teacher = torch.randn(2, 5, VOCAB_SIZE, generator=generator)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    loss = distillation_loss(student, teacher, mask)
    changed_padding = student.clone()
    changed_padding[0, 3:] += 100.0
    assert float(distillation_loss(changed_padding, teacher, mask)) == pytest.approx(float(loss))
    assert float(loss) > 0
    assert float(distillation_loss(teacher, teacher, mask)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(PruningError, match="no real token"):
        distillation_loss(student, teacher, torch.zeros_like(mask))


def test_invalid_settings_are_refused_naming_each_problem() -> None:
    with pytest.raises(PruningError, match=r"steps must be >= 0.*learning_rate must be > 0"):
        RecoverySettings(steps=-1, learning_rate=0.0)


def test_corpus_batches_come_from_the_given_corpus(tmp_path: Path) -> None:
    texts = [f"public sentence number {n} about the weather and the sea" for n in range(12)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "corpus.jsonl").write_text(
        "".join(json.dumps({"id": f"c{n}", "text": t}) + "\n" for n, t in enumerate(texts)),
        encoding="utf-8",
    )
    model_dir = tmp_path / "model"
    tokenizer = train_bpe_tokenizer(texts, 300, 64)
    tokenizer.save_pretrained(model_dir)
    known = {tuple(tokenizer(text)["input_ids"]) for text in texts}
    settings = RecoverySettings(steps=5, batch_size=4, max_length=64)
    batches = list(corpus_batches(model_dir, settings, corpus_dir=corpus))
    assert len(batches) == 5
    for batch in batches:
        assert batch.input_ids.shape[0] == 4
        for ids, mask in zip(batch.input_ids, batch.attention_mask, strict=True):
            assert tuple(ids[mask.bool()].tolist()) in known
