"""Writing the round's global LoRA adapter as a PEFT adapter directory.

The adapter file format (names, config checks, safetensors) is
:mod:`tensorguard.hf`'s; this module publishes the directory so that ``out_dir`` is
either complete or absent. The output loads with
``PeftModel.from_pretrained(base_model, out_dir)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from tensorguard.durable import DestinationExistsError, atomic_directory
from tensorguard.federation._errors import AdapterFormatError
from tensorguard.hf import read_adapter_config, write_adapter


def write_peft_adapter(
    tensors: Mapping[str, torch.Tensor],
    template_adapter_dir: Path,
    out_dir: Path,
    *,
    replace: bool = False,
    base_model_digest: str | None = None,
) -> Path:
    """Write ``tensors`` with a copy of ``template_adapter_dir``'s config as a PEFT adapter.

    The template is the round's reference adapter (same rank, alpha and target
    modules); its config must be a LoRA config and ``tensors`` LoRA weights
    (:func:`tensorguard.hf.write_adapter` checks both). Files are written to a temporary
    directory and moved into place (:func:`tensorguard.durable.atomic_directory`), so
    ``out_dir`` is either complete or absent. An existing ``out_dir`` is refused, or with
    ``replace=True`` swapped for the new adapter only once that is complete. The config
    names the base model by ``base_model_digest`` when given, else by the template's
    reference (a template naming a local path is refused).
    """
    config = read_adapter_config(template_adapter_dir)
    try:
        with atomic_directory(out_dir, replace=replace) as staging:
            write_adapter(staging, config, tensors, base_model_digest=base_model_digest)
    except DestinationExistsError as exc:
        raise AdapterFormatError(
            f"{out_dir} already exists; choose a fresh output directory or pass replace=True"
        ) from exc
    return out_dir
