"""Exception types for the training area (data, base model, LoRA, determinism)."""

from __future__ import annotations

from tensorguard.errors import TensorGuardError


class TrainingError(TensorGuardError):
    """Training, evaluation or artifact writing failed."""


class DatasetError(TrainingError):
    """A site's data is missing or does not follow the documented JSONL schema."""


class BaseModelError(TrainingError):
    """A base model directory is missing, incomplete or not loadable."""


class AdapterError(TrainingError):
    """A LoRA adapter directory is missing, incomplete or does not fit its base model."""
