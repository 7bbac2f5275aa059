"""The base model: validate a local Hugging Face model directory, or build the default.

:func:`load_base_model_info` checks that a directory is a complete, loadable causal LM
(``config.json``, safetensors weights, a tokenizer) and describes it. Nothing is ever
downloaded: every Hugging Face call passes ``local_files_only=True`` and
``trust_remote_code=False``. Pickle-based weights (``pytorch_model.bin``) are refused,
because unpickling an untrusted file can execute code.

:func:`build_default_base_model` is the offline default: it trains a byte-level BPE
tokenizer on the shipped corpus, builds a small Llama-style causal LM and pretrains it
briefly on the same corpus, so the federation starts from a model that already knows
the language of the demo domains.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import (
    AutoConfig,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from tensorguard.digest import sha256_bytes, sha256_tree
from tensorguard.durable import atomic_directory
from tensorguard.hf import MODEL_CONFIG_FILE
from tensorguard.training.causal_lm import encode_texts, pad_token_id_of
from tensorguard.training.demo_data import default_corpus_dir
from tensorguard.training.errors import BaseModelError, DatasetError
from tensorguard.training.jsonl import parse_text_records, read_jsonl_bytes
from tensorguard.training.tokenizer_training import train_bpe_tokenizer
from tensorguard.training.train_loop import (
    LoopSettings,
    ProgressCallback,
    limit_torch_threads,
    run_training_loop,
)

SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
PICKLE_WEIGHT_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
PROVENANCE_FILE = "tensorguard_base_model.json"
CAUSAL_LM_ARCHITECTURES = frozenset(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
BUILDER_NAME = "tensorguard.training.base_model.build_default_base_model"

DEFAULT_VOCAB_SIZE = 1024
DEFAULT_HIDDEN_SIZE = 64
DEFAULT_INTERMEDIATE_SIZE = 192
DEFAULT_LAYERS = 2
DEFAULT_ATTENTION_HEADS = 4
DEFAULT_MAX_POSITIONS = 256
DEFAULT_PRETRAIN_STEPS = 150
PRETRAIN_BATCH_SIZE = 16
PRETRAIN_MAX_LENGTH = 128
PRETRAIN_LEARNING_RATE = 3e-3
PRETRAIN_WEIGHT_DECAY = 0.01
PRETRAIN_LOG_EVERY = 25
PRETRAIN_TORCH_THREADS = 1  # the default model is small: one thread is fastest


@dataclass(frozen=True)
class BaseModelInfo:
    """A validated local base model directory.

    ``digest`` is :func:`tensorguard.digest.sha256_tree` of the directory;
    ``built_locally`` is true when :func:`build_default_base_model` produced it, in
    which case the pretraining losses (first step, last step) are recorded too.
    """

    path: Path
    digest: str
    parameter_count: int
    architecture: str
    model_type: str
    vocab_size: int
    built_locally: bool
    pretrain_loss_first: float | None = None
    pretrain_loss_last: float | None = None


def build_default_base_model(
    output_dir: Path,
    *,
    corpus_dir: Path | None = None,
    seed: int = 0,
    pretrain_steps: int = DEFAULT_PRETRAIN_STEPS,
    progress: ProgressCallback | None = None,
) -> BaseModelInfo:
    """Train a tokenizer and a small Llama-style causal LM on the corpus; save both.

    ``corpus_dir`` (default: the shipped corpus) holds ``*.jsonl`` files in the
    documented schema. The result is deterministic given ``seed``; with
    :func:`~tensorguard.training.determinism.enable_determinism` on, two builds are
    byte-identical. The directory is written atomically: on any failure
    ``output_dir`` is left as it was.
    """
    if pretrain_steps < 1:
        raise BaseModelError(
            f"pretrain_steps must be at least 1, got {pretrain_steps}; "
            "an untrained base model would be meaningless"
        )
    corpus_dir = corpus_dir or default_corpus_dir()
    texts, corpus_digest = read_corpus(corpus_dir)
    with torch.random.fork_rng(devices=[]), limit_torch_threads(PRETRAIN_TORCH_THREADS):
        torch.manual_seed(seed)
        tokenizer = train_bpe_tokenizer(texts, DEFAULT_VOCAB_SIZE, DEFAULT_MAX_POSITIONS)
        if progress is not None:
            progress(
                f"base model: trained a byte-level BPE tokenizer with {len(tokenizer)} tokens "
                f"on {len(texts)} corpus texts"
            )
        model = LlamaForCausalLM(_default_config(tokenizer))
        sequences = encode_texts(tokenizer, texts, PRETRAIN_MAX_LENGTH)
        pad_token_id = pad_token_id_of(tokenizer)
        stats = run_training_loop(
            model,
            sequences,
            pad_token_id,
            LoopSettings(
                steps=pretrain_steps,
                batch_size=PRETRAIN_BATCH_SIZE,
                learning_rate=PRETRAIN_LEARNING_RATE,
                weight_decay=PRETRAIN_WEIGHT_DECAY,
                seed=seed,
                log_every=PRETRAIN_LOG_EVERY,
                label="base model pretraining",
            ),
            progress,
        )
    provenance = {
        "builder": BUILDER_NAME,
        "corpus_digest": corpus_digest,
        "corpus_texts": len(texts),
        "seed": seed,
        "pretrain_steps": pretrain_steps,
        "batch_size": PRETRAIN_BATCH_SIZE,
        "max_length": PRETRAIN_MAX_LENGTH,
        "learning_rate": PRETRAIN_LEARNING_RATE,
        "loss_curve": list(stats.loss_curve),
    }
    with atomic_directory(output_dir) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / PROVENANCE_FILE).write_text(
            json.dumps(provenance, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
    if progress is not None:
        progress(
            f"base model: pretrained {pretrain_steps} steps, loss "
            f"{stats.loss_curve[0]:.3f} -> {stats.loss_curve[-1]:.3f}; saved to {output_dir}"
        )
    return load_base_model_info(output_dir)


def load_base_model_info(model_dir: Path) -> BaseModelInfo:
    """Validate a local Hugging Face causal-LM directory and describe it.

    Raises :class:`BaseModelError` naming the path and the fix when the directory,
    ``config.json``, safetensors weights or tokenizer are missing or unloadable, or
    when the model is not a causal language model.
    """
    config = _load_config(model_dir)
    model_type = str(config.model_type)
    causal_architecture = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type)
    if causal_architecture is None:
        raise BaseModelError(
            f"{model_dir / MODEL_CONFIG_FILE}: model_type {model_type!r} is not a causal language "
            "model known to transformers; choose a causal LM (e.g. a Llama-style model)"
        )
    architectures = getattr(config, "architectures", None) or [causal_architecture]
    if architectures[0] not in CAUSAL_LM_ARCHITECTURES:
        raise BaseModelError(
            f"{model_dir / MODEL_CONFIG_FILE}: architecture {architectures[0]!r} has no causal "
            f"language-modelling head (expected e.g. {causal_architecture!r}); save the model "
            "from its *ForCausalLM class"
        )
    parameter_count = _count_parameters(model_dir)
    load_tokenizer(model_dir)
    vocab_size = getattr(config.get_text_config(), "vocab_size", None)
    if not isinstance(vocab_size, int):
        raise BaseModelError(
            f"{model_dir / MODEL_CONFIG_FILE}: no integer vocab_size; fix the model configuration"
        )
    provenance = _read_provenance(model_dir)
    curve = provenance.loss_curve if provenance else ()
    return BaseModelInfo(
        path=model_dir,
        digest=sha256_tree(model_dir),
        parameter_count=parameter_count,
        architecture=str(architectures[0]),
        model_type=model_type,
        vocab_size=vocab_size,
        built_locally=provenance is not None,
        pretrain_loss_first=float(curve[0]) if curve else None,
        pretrain_loss_last=float(curve[-1]) if curve else None,
    )


def load_tokenizer(model_dir: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer saved in ``model_dir`` (local files only, no remote code)."""
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise BaseModelError(
            f"{model_dir}: no tokenizer found (expected one of {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer into the model directory with tokenizer.save_pretrained()"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BaseModelError(
            f"{model_dir}: the tokenizer cannot be loaded ({exc}); "
            "re-save it with tokenizer.save_pretrained()"
        ) from exc
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise BaseModelError(f"{model_dir}: the tokenizer did not load as a transformers tokenizer")
    return tokenizer


def _default_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=DEFAULT_HIDDEN_SIZE,
        intermediate_size=DEFAULT_INTERMEDIATE_SIZE,
        num_hidden_layers=DEFAULT_LAYERS,
        num_attention_heads=DEFAULT_ATTENTION_HEADS,
        num_key_value_heads=DEFAULT_ATTENTION_HEADS,
        max_position_embeddings=DEFAULT_MAX_POSITIONS,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        architectures=["LlamaForCausalLM"],
    )


def read_corpus(corpus_dir: Path) -> tuple[list[str], str]:
    """Return the texts of every ``*.jsonl`` file in ``corpus_dir`` and their digest.

    The digest is SHA-256 over ``name\\0size\\0sha256\\n`` per file, sorted by name (the
    construction of :func:`tensorguard.digest.sha256_tree`), computed from the very
    bytes that were parsed.
    """
    if not corpus_dir.is_dir():
        raise DatasetError(
            f"{corpus_dir}: corpus directory not found; point corpus_dir at a directory of "
            "*.jsonl files (see docs/DATA.md)"
        )
    files = sorted(corpus_dir.glob("*.jsonl"))
    if not files:
        raise DatasetError(
            f"{corpus_dir}: no *.jsonl corpus files; add at least one (see docs/DATA.md)"
        )
    texts: list[str] = []
    listing: list[str] = []
    for path in files:
        data = read_jsonl_bytes(path)
        texts.extend(record.text for record in parse_text_records(path, data))
        listing.append(f"{path.name}\0{len(data)}\0{sha256_bytes(data)}\n")
    return texts, sha256_bytes("".join(listing).encode())


def _load_config(model_dir: Path) -> PretrainedConfig:
    if not model_dir.is_dir():
        raise BaseModelError(
            f"{model_dir}: base model directory not found; give the path of a local Hugging "
            "Face model directory, or leave it unset to build the default base model"
        )
    if not (model_dir / MODEL_CONFIG_FILE).is_file():
        raise BaseModelError(
            f"{model_dir}: not a Hugging Face model directory ({MODEL_CONFIG_FILE} is missing); "
            "save the model there with model.save_pretrained() and tokenizer.save_pretrained()"
        )
    try:
        config = AutoConfig.from_pretrained(
            model_dir, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError, KeyError) as exc:
        raise BaseModelError(
            f"{model_dir / MODEL_CONFIG_FILE}: cannot be loaded as a transformers configuration "
            f"({exc}); re-save the model with model.save_pretrained()"
        ) from exc
    if not isinstance(config, PretrainedConfig):
        raise BaseModelError(f"{model_dir / MODEL_CONFIG_FILE}: not a transformers configuration")
    return config


def _weight_files(model_dir: Path) -> list[Path]:
    single = model_dir / SAFETENSORS_FILE
    if single.is_file():
        return [single]
    index = model_dir / SAFETENSORS_INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted({model_dir / str(name) for name in weight_map.values()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BaseModelError(
                f"{index}: unreadable safetensors index ({exc}); re-save the model"
            ) from exc
        missing = [shard.name for shard in shards if not shard.is_file()]
        if missing or not shards:
            raise BaseModelError(
                f"{index}: shard(s) {', '.join(missing) or '(none listed)'} missing; "
                "copy the complete model directory"
            )
        return shards
    if any((model_dir / name).is_file() for name in PICKLE_WEIGHT_FILES):
        raise BaseModelError(
            f"{model_dir}: only pickle weights (pytorch_model.bin) found, which can execute code "
            "when loaded; convert them with model.save_pretrained(dir, safe_serialization=True)"
        )
    raise BaseModelError(
        f"{model_dir}: no model weights ({SAFETENSORS_FILE} or {SAFETENSORS_INDEX_FILE}); "
        "save the model there with model.save_pretrained()"
    )


def _count_parameters(model_dir: Path) -> int:
    total = 0
    for path in _weight_files(model_dir):
        try:
            with safe_open(str(path), framework="pt") as weights:
                names = weights.keys()  # a safe_open handle is not iterable itself
                for name in names:
                    total += math.prod(weights.get_slice(name).get_shape())
        except (OSError, SafetensorError) as exc:
            raise BaseModelError(
                f"{path}: not a readable safetensors file ({exc}); re-save the model"
            ) from exc
    if total == 0:
        raise BaseModelError(f"{model_dir}: the weight files hold no tensors; re-save the model")
    return total


@dataclass(frozen=True)
class _BuildRecord:
    loss_curve: tuple[float, ...]


def _read_provenance(model_dir: Path) -> _BuildRecord | None:
    path = model_dir / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        provenance = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BaseModelError(
            f"{path}: unreadable build record ({exc}); rebuild the default base model"
        ) from exc
    curve = provenance.get("loss_curve") if isinstance(provenance, dict) else None
    if (
        not isinstance(provenance, dict)
        or provenance.get("builder") != BUILDER_NAME
        or not isinstance(curve, list)
        or not curve
        or not all(isinstance(value, float | int) for value in curve)
    ):
        raise BaseModelError(f"{path}: not a TensorGuard build record; remove it or rebuild")
    return _BuildRecord(loss_curve=tuple(float(value) for value in curve))
