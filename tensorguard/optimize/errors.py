"""Exception types for the deployment-artifact builders (merge, 2:4, ONNX, TensorRT)."""

from __future__ import annotations

from tensorguard.errors import TensorGuardError


class OptimizeError(TensorGuardError):
    """A deployment artifact could not be built or checked."""


class MergeError(OptimizeError):
    """A LoRA adapter could not be merged into its base model."""


class PruningError(OptimizeError):
    """2:4 structured sparsity could not be applied or verified."""


class OnnxExportError(OptimizeError):
    """The ONNX export, its validation or its onnxruntime parity run failed."""


class TensorRTUnavailableError(OptimizeError):
    """TensorRT or a CUDA device is missing, so no engine can be built here.

    This is a refusal, not a crash: the message names what is missing and how to
    provide it (install ``tensorguard[gpu]`` on a machine with an NVIDIA GPU and driver).
    """


class TensorRTBuildError(OptimizeError):
    """TensorRT is present but parsing the ONNX model or building the engine failed."""
