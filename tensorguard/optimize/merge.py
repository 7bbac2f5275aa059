"""Merge a PEFT LoRA adapter into its base causal language model.

The merge is PEFT's own ``merge_and_unload``. Loading goes through
:mod:`tensorguard.hf`, which checks what PEFT leaves to the caller: both directories
hold what they should, nothing is fetched from a hub, and every tensor in the adapter
file was really loaded into the model (PEFT only warns about adapter keys that match no
module, which would otherwise produce a silently unchanged "merged" model).
"""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedModel

from tensorguard.errors import TensorGuardError
from tensorguard.hf import CHECKPOINT_DTYPE, ModelDtype, load_adapter, load_causal_lm
from tensorguard.optimize.errors import MergeError


def merge_adapter(
    base_model_dir: Path, adapter_dir: Path, *, dtype: ModelDtype = CHECKPOINT_DTYPE
) -> PreTrainedModel:
    """Return the base model with the LoRA adapter's update merged into its weights.

    ``dtype`` defaults to the dtype recorded in the base checkpoint. Raises
    :class:`MergeError` naming the directory or adapter tensor at fault when a file is
    missing, the adapter does not fit the base model, or an adapter tensor did not load.
    """
    try:
        peft_model = load_adapter(
            load_causal_lm(base_model_dir, dtype=dtype), adapter_dir, trainable=False
        )
    except TensorGuardError as exc:
        raise MergeError(
            f"cannot merge the adapter in {adapter_dir} into the base model in "
            f"{base_model_dir}: {exc}"
        ) from exc
    merged = peft_model.merge_and_unload()
    if not isinstance(merged, PreTrainedModel):
        raise MergeError(f"merging {adapter_dir} did not return a transformers PreTrainedModel")
    merged.train(False)
    return merged
