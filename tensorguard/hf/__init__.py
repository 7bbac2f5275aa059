"""Hugging Face I/O in one place: load a causal LM, LoRA adapter files, token loss.

* :func:`load_causal_lm` — a local checkpoint in an explicit dtype, offline, safetensors only.
* :func:`read_adapter_config`, :func:`read_adapter_tensors`, :func:`write_adapter`,
  :func:`save_peft_adapter`, :func:`load_adapter` — PEFT LoRA adapter directories, whose
  file names are :data:`ADAPTER_CONFIG_FILE` and :data:`ADAPTER_WEIGHTS_FILE`; their
  configs name the base model by digest (:func:`portable_adapter_config`), never by path.
* :func:`token_loss`, :func:`evaluate_token_loss` — next-token loss that never counts
  padding.
"""

from __future__ import annotations

from tensorguard.hf.adapter import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_FILES,
    ADAPTER_WEIGHTS_FILE,
    adapter_base_model_digest,
    attach_new_lora,
    load_adapter,
    lora_config_of,
    portable_adapter_config,
    read_adapter_config,
    read_adapter_tensors,
    require_base_model,
    save_peft_adapter,
    write_adapter,
)
from tensorguard.hf.loss import IGNORE_INDEX, TokenBatch, evaluate_token_loss, token_loss
from tensorguard.hf.model import CHECKPOINT_DTYPE, MODEL_CONFIG_FILE, ModelDtype, load_causal_lm

__all__ = [
    "ADAPTER_CONFIG_FILE",
    "ADAPTER_FILES",
    "ADAPTER_WEIGHTS_FILE",
    "CHECKPOINT_DTYPE",
    "IGNORE_INDEX",
    "MODEL_CONFIG_FILE",
    "ModelDtype",
    "TokenBatch",
    "adapter_base_model_digest",
    "attach_new_lora",
    "evaluate_token_loss",
    "load_adapter",
    "load_causal_lm",
    "lora_config_of",
    "portable_adapter_config",
    "read_adapter_config",
    "read_adapter_tensors",
    "require_base_model",
    "save_peft_adapter",
    "token_loss",
    "write_adapter",
]
