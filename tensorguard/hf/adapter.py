"""PEFT LoRA adapters on disk: the file names, read, write, save and load onto a model.

An adapter directory holds ``adapter_config.json`` and ``adapter_model.safetensors``
as written by ``PeftModel.save_pretrained``: weights are named without the adapter
name (``...lora_A.weight``), so every directory written here loads with
``PeftModel.from_pretrained(base_model, adapter_dir)``. Writers do not stage or rename:
the caller writes into a staging directory and publishes it atomically.

Portability rule (here and nowhere else): every config written records its base model as
a reference ``base-model@sha256:<digest>`` (:mod:`tensorguard.model_reference`) in
``base_model_name_or_path``, never the local directory peft would write, so two
publishers write identical configs and no package carries a file-system path.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model, get_peft_model_state_dict
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import PreTrainedModel

from tensorguard.model_reference import (
    ModelReferenceError,
    base_model_reference,
    parse_base_model_reference,
)
from tensorguard.training.errors import AdapterError

# peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model,
# which warns once per adapter load; the call is peft's, not the user's to fix.
warnings.filterwarnings(
    "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
)
# Saving an adapter, peft looks for the base model's config at base_model_name_or_path to
# see whether the vocabulary changed; that field is a digest reference, never a path
# (portable_adapter_config), and TensorGuard never resizes the vocabulary.
warnings.filterwarnings(
    "ignore", message="Could not find a config file in base-model@sha256:", category=UserWarning
)

ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE)
PEFT_MODEL_CARD_FILE = "README.md"
LORA_PEFT_TYPE = "LORA"
BASE_MODEL_FIELD = "base_model_name_or_path"


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    """Return the parsed ``adapter_config.json`` of a LoRA adapter directory."""
    _require_files(adapter_dir, (ADAPTER_CONFIG_FILE,))
    path = adapter_dir / ADAPTER_CONFIG_FILE
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterError(f"cannot read adapter config {path}: {exc}") from exc
    _require_lora_config(config, str(path))
    return dict(config)


def read_adapter_tensors(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Return the tensors of ``adapter_model.safetensors``, exactly as stored."""
    _require_files(adapter_dir, ADAPTER_FILES)
    path = adapter_dir / ADAPTER_WEIGHTS_FILE
    try:
        return dict(load_file(str(path)))
    except (OSError, SafetensorError) as exc:
        raise AdapterError(f"cannot read adapter weights {path}: {exc}") from exc


def adapter_base_model_digest(config: Mapping[str, Any]) -> str | None:
    """The base-model digest an adapter config names, or None when it names none.

    Raises :class:`AdapterError` when ``base_model_name_or_path`` holds anything but a
    base-model reference (a local path in particular: such an adapter is not portable).
    """
    value = config.get(BASE_MODEL_FIELD)
    if value is None or value == "":
        return None
    try:
        return parse_base_model_reference(value)
    except ModelReferenceError as exc:
        raise AdapterError(
            f"the adapter config names its base model as {value!r}: {exc}. Re-write it with "
            "tensorguard's adapter writers (they record base-model@sha256:<digest>)"
        ) from exc


def portable_adapter_config(
    config: Mapping[str, Any], base_model_digest: str | None
) -> dict[str, Any]:
    """``config`` with its base model named by reference, the one rule for every writer.

    With ``base_model_digest`` the reference to that digest replaces whatever the config
    held; without it the config must already name a reference (or none), else
    :class:`AdapterError`.
    """
    portable = dict(config)
    if base_model_digest is None:
        adapter_base_model_digest(portable)
        return portable
    try:
        portable[BASE_MODEL_FIELD] = base_model_reference(base_model_digest)
    except ModelReferenceError as exc:
        raise AdapterError(str(exc)) from exc
    return portable


def write_adapter(
    directory: Path,
    config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    *,
    base_model_digest: str | None = None,
) -> None:
    """Write ``config`` and the LoRA ``tensors`` as an adapter into ``directory``.

    ``config`` must be a PEFT LoRA config (usually the round's template adapter's) and
    ``tensors`` a non-empty set of LoRA weights; both are checked before anything is
    written. Tensors are stored on the CPU, contiguous, bit for bit. The base model is
    recorded by reference (:func:`portable_adapter_config`).
    """
    _require_lora_config(config, "the adapter config to write")
    if not tensors or not all("lora_" in name for name in tensors):
        raise AdapterError("adapter tensors must be a non-empty set of LoRA weights")
    portable = portable_adapter_config(config, base_model_digest)
    (directory / ADAPTER_CONFIG_FILE).write_text(
        json.dumps(portable, indent=2) + "\n", encoding="utf-8"
    )
    save_file(
        {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()},
        str(directory / ADAPTER_WEIGHTS_FILE),
        metadata={"format": "pt"},
    )


def save_peft_adapter(peft_model: PeftModel, directory: Path, *, base_model_digest: str) -> None:
    """Save with ``save_pretrained``, keeping the files byte-stable across processes.

    peft keeps ``target_modules`` as a set, whose order follows Python's per-process
    string hashing; it is written sorted instead. peft records the local directory of
    the base model; the reference to ``base_model_digest`` is written instead
    (:func:`portable_adapter_config`). peft's model card is a template of "More
    Information Needed" fields, so it is not kept.
    """
    try:
        reference = base_model_reference(base_model_digest)
    except ModelReferenceError as exc:
        raise AdapterError(str(exc)) from exc
    for adapter_config in peft_model.peft_config.values():
        if isinstance(adapter_config, LoraConfig) and adapter_config.target_modules:
            adapter_config.target_modules = sorted(adapter_config.target_modules)
        adapter_config.base_model_name_or_path = reference
    peft_model.save_pretrained(str(directory))
    (directory / PEFT_MODEL_CARD_FILE).unlink(missing_ok=True)


def load_adapter(
    model: PreTrainedModel,
    adapter_dir: Path,
    *,
    trainable: bool,
    base_model_digest: str | None = None,
) -> PeftModel:
    """Load the adapter in ``adapter_dir`` onto ``model`` with ``PeftModel.from_pretrained``.

    peft only warns about adapter tensors that match no module of the model; here every
    tensor of the adapter file must sit, unchanged, in the returned model, else
    :class:`~tensorguard.training.errors.AdapterError` names the tensor. With
    ``base_model_digest`` (the digest of the directory ``model`` was loaded from) the
    adapter's config must name that base model.
    """
    _require_files(adapter_dir, ADAPTER_FILES)
    if base_model_digest is not None:
        require_base_model(adapter_dir, base_model_digest)
    try:
        peft_model = PeftModel.from_pretrained(
            model, str(adapter_dir), is_trainable=trainable, local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, SafetensorError) as exc:
        raise AdapterError(
            f"{adapter_dir}: the adapter cannot be loaded onto the base model ({exc}); "
            "check that it was trained on this base model"
        ) from exc
    loaded = get_peft_model_state_dict(peft_model)
    for key, saved_tensor in read_adapter_tensors(adapter_dir).items():
        loaded_tensor = loaded.get(key)
        if loaded_tensor is None:
            raise AdapterError(
                f"{adapter_dir}: adapter tensor {key!r} matches no module of the base model; "
                "the adapter was trained for a different architecture"
            )
        if not torch.equal(loaded_tensor.detach().cpu().to(saved_tensor.dtype), saved_tensor):
            raise AdapterError(
                f"{adapter_dir}: adapter tensor {key!r} did not load unchanged into the model"
            )
    return peft_model


def require_base_model(adapter_dir: Path, base_model_digest: str) -> None:
    """Refuse (:class:`AdapterError`) an adapter whose config names another base model
    than the one with ``base_model_digest`` (or names none)."""
    named = adapter_base_model_digest(read_adapter_config(adapter_dir))
    if named != base_model_digest:
        raise AdapterError(
            f"{adapter_dir}: the adapter was made for base model "
            f"{named[:16] + '…' if named else 'unnamed'}, not for {base_model_digest[:16]}…; "
            "load it onto the base model its config names (resolve base-model@sha256:<digest> "
            "through the artifact store)"
        )


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


def lora_config_of(peft_model: PeftModel, adapter_dir: Path) -> LoraConfig:
    """Return the LoRA configuration of ``peft_model``'s active adapter."""
    adapter_config = peft_model.peft_config.get(peft_model.active_adapter)
    if not isinstance(adapter_config, LoraConfig):
        raise AdapterError(f"{adapter_dir}: not a LoRA adapter; only LoRA adapters are supported")
    return adapter_config


def _require_files(adapter_dir: Path, names: Sequence[str]) -> None:
    for name in names:
        if not (adapter_dir / name).is_file():
            raise AdapterError(
                f"{adapter_dir} is not a PEFT adapter: {name} is missing; point at a "
                "directory written by PeftModel.save_pretrained (train_site_adapter, "
                "create_initial_adapter, write_adapter)"
            )


def _require_lora_config(config: object, source: str) -> None:
    if not isinstance(config, Mapping) or config.get("peft_type") != LORA_PEFT_TYPE:
        raise AdapterError(
            f"{source} is not a PEFT LoRA adapter config (peft_type must be "
            f"{LORA_PEFT_TYPE!r}); only LoRA adapters are supported"
        )
