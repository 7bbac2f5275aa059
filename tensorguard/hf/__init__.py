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

from typing import TYPE_CHECKING

from tensorguard.lazy_exports import lazy_exports

if TYPE_CHECKING:
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

# Every module here needs torch, transformers or peft: each is imported on first use, so
# that importing a module that uses them only in function bodies (the Dagster definitions)
# loads none of them.
_LAZY = {
    "ADAPTER_CONFIG_FILE": "tensorguard.hf.adapter",
    "ADAPTER_FILES": "tensorguard.hf.adapter",
    "ADAPTER_WEIGHTS_FILE": "tensorguard.hf.adapter",
    "adapter_base_model_digest": "tensorguard.hf.adapter",
    "attach_new_lora": "tensorguard.hf.adapter",
    "load_adapter": "tensorguard.hf.adapter",
    "lora_config_of": "tensorguard.hf.adapter",
    "portable_adapter_config": "tensorguard.hf.adapter",
    "read_adapter_config": "tensorguard.hf.adapter",
    "read_adapter_tensors": "tensorguard.hf.adapter",
    "require_base_model": "tensorguard.hf.adapter",
    "save_peft_adapter": "tensorguard.hf.adapter",
    "write_adapter": "tensorguard.hf.adapter",
    "IGNORE_INDEX": "tensorguard.hf.loss",
    "TokenBatch": "tensorguard.hf.loss",
    "evaluate_token_loss": "tensorguard.hf.loss",
    "token_loss": "tensorguard.hf.loss",
    "CHECKPOINT_DTYPE": "tensorguard.hf.model",
    "MODEL_CONFIG_FILE": "tensorguard.hf.model",
    "ModelDtype": "tensorguard.hf.model",
    "load_causal_lm": "tensorguard.hf.model",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())
