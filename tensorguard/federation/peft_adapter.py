"""Reading and writing PEFT LoRA adapters (``adapter_config.json`` + safetensors).

PEFT's ``save_pretrained`` writes the adapter weights without the adapter name
(``...lora_A.weight``), which is the form read and written here, so the output loads
with ``PeftModel.from_pretrained(base_model, out_dir)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tensorguard.durable import DestinationExistsError, atomic_directory
from tensorguard.federation.errors import AdapterFormatError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def read_peft_adapter(adapter_dir: Path) -> dict[str, torch.Tensor]:
    """Load ``adapter_model.safetensors`` from a PEFT adapter directory."""
    weights = adapter_dir / ADAPTER_WEIGHTS
    if not (adapter_dir / ADAPTER_CONFIG).is_file() or not weights.is_file():
        raise AdapterFormatError(
            f"{adapter_dir} is not a PEFT adapter: it needs {ADAPTER_CONFIG} and "
            f"{ADAPTER_WEIGHTS} (written by save_pretrained)"
        )
    try:
        return dict(load_file(str(weights)))
    except (OSError, SafetensorError) as exc:
        raise AdapterFormatError(f"cannot read {weights}: {exc}") from exc


def write_peft_adapter(
    tensors: Mapping[str, torch.Tensor],
    adapter_config_path: Path,
    out_dir: Path,
    *,
    replace: bool = False,
) -> Path:
    """Write ``tensors`` with a copy of ``adapter_config_path`` as a PEFT adapter.

    The config is the template of the round's adapters (same rank, alpha and target
    modules); it is checked to be a LoRA config. Files are written to a temporary
    directory and moved into place (:func:`tensorguard.durable.atomic_directory`), so
    ``out_dir`` is either complete or absent. An existing ``out_dir`` is refused, or with
    ``replace=True`` swapped for the new adapter only once that is complete.
    """
    try:
        config = json.loads(adapter_config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise AdapterFormatError(
            f"cannot read adapter config {adapter_config_path}: {exc}"
        ) from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise AdapterFormatError(f"{adapter_config_path} is not a PEFT LoRA adapter config")
    if not tensors or not all("lora_" in name for name in tensors):
        raise AdapterFormatError("adapter tensors must be a non-empty set of LoRA weights")
    try:
        with atomic_directory(out_dir, replace=replace) as staging:
            (staging / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n", "utf-8")
            save_file(
                {name: tensor.detach().contiguous().cpu() for name, tensor in tensors.items()},
                str(staging / ADAPTER_WEIGHTS),
                metadata={"format": "pt"},
            )
    except DestinationExistsError as exc:
        raise AdapterFormatError(
            f"{out_dir} already exists; choose a fresh output directory or pass replace=True"
        ) from exc
    return out_dir
