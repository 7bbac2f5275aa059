"""Per-site LoRA fine-tuning with peft, evaluated on the site's held-out texts.

:func:`train_site_adapter` wraps the base model with ``peft.get_peft_model`` (or starts
from a given adapter, such as the round's reference adapter in federated training),
measures the token-weighted mean loss on the site's evaluation texts, trains the LoRA
weights with a plain AdamW loop, measures again and saves ``adapter_config.json`` and
``adapter_model.safetensors`` (via ``save_pretrained``) atomically. Anyone can reload
the result with ``PeftModel.from_pretrained``; :func:`evaluate_adapter` does exactly
that and reproduces the recorded evaluation loss.

:func:`create_initial_adapter` writes a seeded, untrained adapter (LoRA ``B`` is zero,
so it leaves the base model's outputs unchanged): a common starting point every
federation site can train from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import torch
from peft import PeftModel
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from transformers import PreTrainedModel

from tensorguard.digest import sha256_tree
from tensorguard.durable import atomic_directory
from tensorguard.hf import (
    ADAPTER_CONFIG_FILE,
    attach_new_lora,
    evaluate_token_loss,
    load_adapter,
    load_causal_lm,
    lora_config_of,
    read_adapter_config,
    save_peft_adapter,
)
from tensorguard.training.base_model import load_tokenizer
from tensorguard.training.causal_lm import (
    batches_in_order,
    encode_texts,
    pad_token_id_of,
    perplexity,
)
from tensorguard.training.dataset import SiteDataset
from tensorguard.training.errors import AdapterError
from tensorguard.training.lora_targets import LLAMA_ATTENTION_AND_MLP as LLAMA_ATTENTION_AND_MLP
from tensorguard.training.train_loop import (
    LoopSettings,
    ProgressCallback,
    limit_torch_threads,
    run_training_loop,
)

TRAINING_SETTINGS_FILE = "training.json"
"""Beside a site's adapter in the artifact store: the LoRATrainingConfig it was trained
with (JSON), so that the adapter can be reproduced from the site's data."""
ModuleName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")]


class LoRAAdapterSpec(BaseModel):
    """The shape of a LoRA adapter: rank, scaling, dropout and the modules it adapts."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(default=8, ge=1, le=1024, description="LoRA rank")
    alpha: int = Field(default=16, ge=1, description="LoRA scaling numerator (alpha / r)")
    dropout: float = Field(default=0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: tuple[ModuleName, ...] = Field(
        default=LLAMA_ATTENTION_AND_MLP, min_length=1, description="module names to adapt"
    )

    @field_validator("target_modules")
    @classmethod
    def _distinct(cls, modules: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(modules)) != len(modules):
            raise ValueError("target_modules lists a module more than once")
        return modules


class LoRATrainingConfig(LoRAAdapterSpec):
    """LoRA hyper-parameters and the training budget for one site.

    The defaults adapt every attention and MLP projection of a Llama-style model and
    reduce the held-out loss of each demo site within a few seconds on one CPU core.
    """

    steps: int = Field(default=60, ge=1, description="optimizer steps")
    learning_rate: float = Field(default=3e-3, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=8, ge=1, description="training texts per step")
    max_length: int = Field(default=128, ge=2, description="tokens kept per text")
    seed: int = Field(default=0, ge=0, description="seeds LoRA init, dropout and data order")
    eval_batch_size: int = Field(default=16, ge=1)
    log_every: int = Field(default=10, ge=1, description="progress line every N steps")
    torch_threads: int | None = Field(
        default=1,
        ge=1,
        description="torch intra-op threads while training (None: keep the process setting); "
        "1 is fastest for small models and on shared CPUs",
    )
    freeze_lora_a: bool = Field(
        default=False,
        description="train only the LoRA B factors and keep every A as it starts "
        "(FFA-LoRA; a round rule, see RoundSpec.frozen_lora_a)",
    )

    @property
    def adapter_spec(self) -> LoRAAdapterSpec:
        """The adapter shape this configuration trains."""
        return LoRAAdapterSpec(
            r=self.r, alpha=self.alpha, dropout=self.dropout, target_modules=self.target_modules
        )


@dataclass(frozen=True)
class TrainingResult:
    """What one site's LoRA training produced and measured.

    Losses are token-weighted mean next-token cross-entropies on the held-out
    evaluation texts; ``seconds`` is the optimisation loop's wall time and
    ``tokens_per_second`` the real (non-padding) training tokens it processed per
    second. ``adapter_digest`` is :func:`tensorguard.digest.sha256_tree` of the saved
    adapter directory; ``initial_adapter_digest`` that of the adapter training started
    from, or ``None`` for a freshly initialised one.
    """

    adapter_dir: Path
    eval_loss_before: float
    eval_loss_after: float
    perplexity_before: float
    perplexity_after: float
    loss_curve: tuple[float, ...]
    train_examples: int
    eval_examples: int
    steps: int
    tokens_processed: int
    seconds: float
    tokens_per_second: float
    adapter_digest: str
    trainable_parameters: int
    initial_adapter_digest: str | None = None


def train_site_adapter(
    base_model_dir: Path,
    dataset: SiteDataset,
    config: LoRATrainingConfig,
    output_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    initial_adapter_dir: Path | None = None,
    base_model_digest: str | None = None,
) -> TrainingResult:
    """Train a LoRA adapter for one site and save it atomically into ``output_dir``.

    Training starts from ``initial_adapter_dir`` when given (its rank, alpha, dropout
    and target modules must equal ``config``'s), else from a fresh LoRA initialisation
    seeded by ``config.seed``. Reproducible given the seed; with
    :func:`~tensorguard.training.determinism.enable_determinism` on, two runs write
    byte-identical adapter files. On failure ``output_dir`` is left as it was.
    The adapter's config names the base model by ``base_model_digest`` (the recorded
    digest of ``base_model_dir``; hashed here when not given), never by its path.
    """
    base_digest = base_model_digest or sha256_tree(base_model_dir)
    model = load_causal_lm(base_model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(base_model_dir)
    pad_token_id = pad_token_id_of(tokenizer)
    train_sequences = encode_texts(tokenizer, dataset.train_texts, config.max_length)
    eval_sequences = encode_texts(tokenizer, dataset.eval_texts, config.max_length)
    with torch.random.fork_rng(devices=[]), limit_torch_threads(config.torch_threads):
        torch.manual_seed(config.seed)
        peft_model = _starting_adapter(model, config, base_model_dir, initial_adapter_dir)
        if config.freeze_lora_a:
            freeze_lora_a_factors(peft_model)
        trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
        if progress is not None:
            start = initial_adapter_dir or f"a fresh initialisation (seed {config.seed})"
            progress(
                f"LoRA r={config.r} on {', '.join(config.target_modules)} from {start}: "
                f"{trainable} trainable parameters; {len(train_sequences)} training and "
                f"{len(eval_sequences)} evaluation texts"
            )
        loss_before = evaluate_token_loss(
            peft_model, batches_in_order(eval_sequences, config.eval_batch_size, pad_token_id)
        )
        if progress is not None:
            progress(f"eval before training: loss {loss_before:.4f}")
        stats = run_training_loop(
            peft_model,
            train_sequences,
            pad_token_id,
            LoopSettings(
                steps=config.steps,
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                weight_decay=config.weight_decay,
                seed=config.seed,
                log_every=config.log_every,
                label="LoRA training",
            ),
            progress,
        )
        loss_after = evaluate_token_loss(
            peft_model, batches_in_order(eval_sequences, config.eval_batch_size, pad_token_id)
        )
    with atomic_directory(output_dir) as staging:
        save_peft_adapter(peft_model, staging, base_model_digest=base_digest)
    if progress is not None:
        progress(
            f"eval after training: loss {loss_after:.4f} (was {loss_before:.4f}); "
            f"{stats.tokens_per_second:.0f} tokens/s; adapter saved to {output_dir}"
        )
    return TrainingResult(
        adapter_dir=output_dir,
        eval_loss_before=loss_before,
        eval_loss_after=loss_after,
        perplexity_before=perplexity(loss_before),
        perplexity_after=perplexity(loss_after),
        loss_curve=stats.loss_curve,
        train_examples=len(train_sequences),
        eval_examples=len(eval_sequences),
        steps=config.steps,
        tokens_processed=stats.tokens_processed,
        seconds=stats.seconds,
        tokens_per_second=stats.tokens_per_second,
        adapter_digest=sha256_tree(output_dir),
        trainable_parameters=trainable,
        initial_adapter_digest=sha256_tree(initial_adapter_dir) if initial_adapter_dir else None,
    )


def create_initial_adapter(
    base_model_dir: Path,
    spec: LoRAAdapterSpec,
    output_dir: Path,
    *,
    seed: int = 0,
    base_model_digest: str | None = None,
) -> str:
    """Write a seeded, untrained LoRA adapter for the base model; return its digest.

    LoRA's ``A`` matrices are drawn from torch's generator seeded with ``seed`` and its
    ``B`` matrices are zero, so the adapter leaves the model's outputs unchanged until
    trained. The same base model, spec and seed always give the same bytes, wherever the
    base model lies: the config names it by ``base_model_digest`` (hashed here when not
    given). Written atomically; the digest is :func:`tensorguard.digest.sha256_tree` of
    ``output_dir``.
    """
    base_digest = base_model_digest or sha256_tree(base_model_dir)
    model = load_causal_lm(base_model_dir, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        peft_model = _new_adapter(model, spec, base_model_dir)
    with atomic_directory(output_dir) as staging:
        save_peft_adapter(peft_model, staging, base_model_digest=base_digest)
    return sha256_tree(output_dir)


def evaluate_adapter(
    base_model_dir: Path,
    adapter_dir: Path,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int,
    torch_threads: int | None = 1,
) -> float:
    """Reload ``adapter_dir`` onto the base model with ``PeftModel.from_pretrained``.

    Returns the token-weighted mean loss on ``texts``; with the ``max_length``, batch
    size and thread count used in training, this reproduces
    ``TrainingResult.eval_loss_after``.
    """
    model = load_causal_lm(base_model_dir, dtype=torch.float32)
    tokenizer = load_tokenizer(base_model_dir)
    peft_model = load_adapter(model, adapter_dir, trainable=False)
    sequences = encode_texts(tokenizer, texts, max_length)
    batches = batches_in_order(sequences, batch_size, pad_token_id_of(tokenizer))
    with limit_torch_threads(torch_threads):
        return evaluate_token_loss(peft_model, batches)


def _new_adapter(model: PreTrainedModel, spec: LoRAAdapterSpec, model_dir: Path) -> PeftModel:
    return attach_new_lora(
        model,
        r=spec.r,
        alpha=spec.alpha,
        dropout=spec.dropout,
        target_modules=spec.target_modules,
        model_dir=model_dir,
    )


def freeze_lora_a_factors(model: torch.nn.Module) -> int:
    """Stop gradients to every LoRA A factor (peft's ``lora_A`` parameters); returns how
    many were frozen. Raises :class:`AdapterError` if the model has none."""
    frozen = 0
    for name, parameter in model.named_parameters():
        if ".lora_A." in name:
            parameter.requires_grad_(False)
            frozen += 1
    if frozen == 0:
        raise AdapterError("no LoRA A factor to freeze: the model holds no LoRA adapter")
    return frozen


def _starting_adapter(
    model: PreTrainedModel,
    config: LoRATrainingConfig,
    base_model_dir: Path,
    initial_adapter_dir: Path | None,
) -> PeftModel:
    if initial_adapter_dir is None:
        return _new_adapter(model, config.adapter_spec, base_model_dir)
    peft_model = load_adapter(model, initial_adapter_dir, trainable=True)
    loaded = lora_config_of(peft_model, initial_adapter_dir)
    found = {
        "r": loaded.r,
        "alpha": loaded.lora_alpha,
        "dropout": loaded.lora_dropout,
        "target_modules": sorted(loaded.target_modules or ()),
    }
    wanted = {
        "r": config.r,
        "alpha": config.alpha,
        "dropout": config.dropout,
        "target_modules": sorted(config.target_modules),
    }
    differences = [
        f"{name} {found[name]!r} (config asks {wanted[name]!r})"
        for name in wanted
        if found[name] != wanted[name]
    ]
    if differences:
        raise AdapterError(
            f"{initial_adapter_dir}: the initial adapter does not match the training "
            f"configuration: {'; '.join(differences)}; train with the adapter's own shape"
        )
    return peft_model


def read_adapter_spec(adapter_dir: Path) -> LoRAAdapterSpec:
    """The LoRA shape recorded in the config file of the adapter in ``adapter_dir``.

    Federated sites train from the round's reference adapter, so they take its shape
    from here rather than from their own configuration.
    """
    document = read_adapter_config(adapter_dir)
    try:
        return LoRAAdapterSpec(
            r=int(document["r"]),
            alpha=int(document["lora_alpha"]),
            dropout=float(document["lora_dropout"]),
            target_modules=tuple(sorted(document["target_modules"])),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise AdapterError(
            f"{adapter_dir / ADAPTER_CONFIG_FILE}: not a readable PEFT LoRA config ({exc}); "
            "point at a directory written by create_initial_adapter or "
            "PeftModel.save_pretrained"
        ) from exc
