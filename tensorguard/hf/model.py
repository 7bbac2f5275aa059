"""Load a local Hugging Face causal language model, in the dtype the caller names.

Nothing is fetched from a hub and no remote code runs: every call passes
``local_files_only=True``, ``trust_remote_code=False`` and ``use_safetensors=True``
(pickle weights are refused, because unpickling an untrusted file can execute code).

Loading does not hash the model directory. A base model's digest is computed once, by
:func:`tensorguard.training.base_model.load_base_model_info` where the artifact is
validated and recorded, not again on every load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, PreTrainedModel
from transformers.utils import logging as transformers_logging

from tensorguard.training.errors import BaseModelError

MODEL_CONFIG_FILE = "config.json"

# Loading and saving print a progress bar per checkpoint file; a pipeline run logs one
# line per stage instead, so the bars are only noise in run logs.
transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
CHECKPOINT_DTYPE: Literal["auto"] = "auto"

ModelDtype = torch.dtype | Literal["auto"]
"""A torch dtype, or ``"auto"`` for the dtype recorded in the checkpoint."""


def load_causal_lm(model_dir: Path, *, dtype: ModelDtype) -> PreTrainedModel:
    """Load the causal LM saved in ``model_dir`` in eval mode, with weights in ``dtype``.

    ``dtype`` is required: training and evaluation pass ``torch.float32`` (the base-model
    contract), deployment code passes :data:`CHECKPOINT_DTYPE` to keep the saved dtype.
    Raises :class:`~tensorguard.training.errors.BaseModelError` naming the directory and
    the fix when it is missing, is not a Hugging Face checkpoint or does not load.
    """
    if not model_dir.is_dir():
        raise BaseModelError(
            f"{model_dir}: model directory not found; give the path of a local Hugging Face "
            "model directory"
        )
    if not (model_dir / MODEL_CONFIG_FILE).is_file():
        raise BaseModelError(
            f"{model_dir}: not a Hugging Face model directory ({MODEL_CONFIG_FILE} is missing); "
            "save the model there with model.save_pretrained()"
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir,
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
            dtype=dtype,
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        raise BaseModelError(
            f"{model_dir}: the causal language model cannot be loaded ({exc}); the directory "
            "must hold a Hugging Face checkpoint with safetensors weights, re-save it with "
            "model.save_pretrained()"
        ) from exc
    if not isinstance(model, PreTrainedModel):
        raise BaseModelError(f"{model_dir}: did not load as a transformers PreTrainedModel")
    model.train(False)
    return model
