"""Merge a PEFT LoRA adapter into its base causal language model.

The merge is PEFT's own ``merge_and_unload``; this module adds the checks PEFT leaves
to the caller: both directories exist and hold what they should, nothing is fetched
from a hub, and every tensor in the adapter file was really loaded into the model
(PEFT only warns about adapter keys that match no module, which would otherwise
produce a silently unchanged "merged" model).
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftModel, get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, PreTrainedModel

from tensorguard.optimize.errors import MergeError

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
MODEL_CONFIG_FILE = "config.json"


def load_causal_lm(model_dir: Path, *, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load a local Hugging Face causal LM in eval mode, never contacting a hub.

    ``dtype`` defaults to the dtype recorded in the checkpoint.
    """
    _require_file(model_dir / MODEL_CONFIG_FILE, "model configuration")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, local_files_only=True, dtype=dtype if dtype is not None else "auto"
        )
    except (OSError, ValueError, RuntimeError) as exc:
        raise MergeError(
            f"cannot load the causal language model in {model_dir}: {exc}; the directory "
            "must hold a Hugging Face checkpoint (config.json and model weights)"
        ) from exc
    if not isinstance(model, PreTrainedModel):
        raise MergeError(f"{model_dir} did not load as a transformers PreTrainedModel")
    model.train(False)
    return model


def merge_adapter(
    base_model_dir: Path, adapter_dir: Path, *, dtype: torch.dtype | None = None
) -> PreTrainedModel:
    """Return the base model with the LoRA adapter's update merged into its weights.

    Raises :class:`MergeError` naming the directory or adapter tensor at fault when
    a file is missing, the adapter does not fit the base model, or an adapter tensor
    did not load.
    """
    _require_file(adapter_dir / ADAPTER_CONFIG_FILE, "adapter configuration")
    adapter_weights_path = adapter_dir / ADAPTER_WEIGHTS_FILE
    _require_file(adapter_weights_path, "adapter weights")
    base_model = load_causal_lm(base_model_dir, dtype=dtype)
    try:
        peft_model = PeftModel.from_pretrained(
            base_model, adapter_dir, is_trainable=False, local_files_only=True
        )
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise MergeError(
            f"cannot apply the adapter in {adapter_dir} to the base model in "
            f"{base_model_dir}: {exc}; check that the adapter was trained on this base model"
        ) from exc
    _require_adapter_fully_loaded(peft_model, adapter_weights_path)
    merged = peft_model.merge_and_unload()
    if not isinstance(merged, PreTrainedModel):
        raise MergeError(f"merging {adapter_dir} did not return a transformers PreTrainedModel")
    merged.train(False)
    return merged


def _require_adapter_fully_loaded(peft_model: PeftModel, adapter_weights_path: Path) -> None:
    """Check that each tensor of the adapter file sits, unchanged, in ``peft_model``."""
    try:
        saved = load_file(adapter_weights_path)
    except (SafetensorError, OSError) as exc:
        raise MergeError(f"cannot read adapter weights {adapter_weights_path}: {exc}") from exc
    loaded = get_peft_model_state_dict(peft_model)
    for key, saved_tensor in saved.items():
        loaded_tensor = loaded.get(key)
        if loaded_tensor is None:
            raise MergeError(
                f"adapter tensor {key!r} in {adapter_weights_path} matches no module of the "
                "base model; the adapter was trained for a different architecture"
            )
        if not torch.equal(loaded_tensor.detach().cpu().to(saved_tensor.dtype), saved_tensor):
            raise MergeError(
                f"adapter tensor {key!r} in {adapter_weights_path} did not load unchanged "
                "into the model"
            )


def _require_file(path: Path, role: str) -> None:
    if not path.is_file():
        raise MergeError(f"{role} file not found: {path}")
