"""Attach, save and reload LoRA adapters with peft, with byte-stable files.

An adapter directory holds exactly ``adapter_config.json`` and
``adapter_model.safetensors``, as written by ``PeftModel.save_pretrained``, so any peft
user can load it with ``PeftModel.from_pretrained``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from safetensors import SafetensorError
from transformers import PreTrainedModel

from tensorguard.training.errors import AdapterError

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_MODEL_CARD_FILE = "README.md"


def attach_new_lora(
    model: PreTrainedModel,
    *,
    r: int,
    alpha: int,
    dropout: float,
    target_modules: Sequence[str],
    model_dir: Path,
) -> PeftModel:
    """Wrap ``model`` with freshly initialised LoRA layers (draws from torch's RNG)."""
    lora_config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(target_modules),
        bias="none",
    )
    try:
        peft_model = get_peft_model(model, lora_config)
    except ValueError as exc:
        raise AdapterError(
            f"cannot apply LoRA to {model_dir} with target_modules {list(target_modules)} "
            f"({exc}); name modules that exist in this model (Llama-style models: q_proj, "
            "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
        ) from exc
    if not isinstance(peft_model, PeftModel):
        raise AdapterError(f"peft did not return a PeftModel for {model_dir}")
    return peft_model


def load_lora(model: PreTrainedModel, adapter_dir: Path, *, trainable: bool) -> PeftModel:
    """Load the adapter in ``adapter_dir`` onto ``model`` with ``PeftModel.from_pretrained``."""
    for name in (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE):
        if not (adapter_dir / name).is_file():
            raise AdapterError(
                f"{adapter_dir}: {name} is missing; point at a directory written by "
                "train_site_adapter, create_initial_adapter or PeftModel.save_pretrained"
            )
    try:
        peft_model = PeftModel.from_pretrained(
            model, str(adapter_dir), is_trainable=trainable, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise AdapterError(
            f"{adapter_dir}: the adapter cannot be loaded onto the base model ({exc}); "
            "check that it was trained on this base model"
        ) from exc
    return peft_model


def lora_config_of(peft_model: PeftModel, adapter_dir: Path) -> LoraConfig:
    """Return the LoRA configuration of ``peft_model``'s active adapter."""
    adapter_config = peft_model.peft_config.get(peft_model.active_adapter)
    if not isinstance(adapter_config, LoraConfig):
        raise AdapterError(f"{adapter_dir}: not a LoRA adapter; only LoRA adapters are supported")
    return adapter_config


def save_lora(peft_model: PeftModel, directory: Path) -> None:
    """Save with ``save_pretrained``, keeping the files byte-stable across processes.

    peft keeps ``target_modules`` as a set, whose order follows Python's per-process
    string hashing; it is written sorted instead. peft's model card is a template of
    "More Information Needed" fields, so it is not kept.
    """
    for adapter_config in peft_model.peft_config.values():
        if isinstance(adapter_config, LoraConfig) and adapter_config.target_modules:
            adapter_config.target_modules = sorted(adapter_config.target_modules)
    peft_model.save_pretrained(str(directory))
    (directory / PEFT_MODEL_CARD_FILE).unlink(missing_ok=True)
