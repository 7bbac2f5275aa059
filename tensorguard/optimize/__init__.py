"""Deployment artifacts built from a base model and a LoRA adapter.

- :mod:`~tensorguard.optimize.merge`: merge the adapter into the base model (PEFT).
- :mod:`~tensorguard.optimize.pruning`: exact 2:4 magnitude pruning and verification.
- :mod:`~tensorguard.optimize.sparse_recovery`: accuracy recovery of the pruned model with
  its mask fixed, by distillation from the dense model on the public corpus.
- :mod:`~tensorguard.optimize.saving`: atomic safetensors checkpoints.
- :mod:`~tensorguard.optimize.onnx_export`: ONNX export, checker, onnxruntime parity.
- :mod:`~tensorguard.optimize.tensorrt_build`: TensorRT engine build, or a clear refusal.
"""

from typing import TYPE_CHECKING

from tensorguard.lazy_exports import lazy_exports
from tensorguard.optimize.errors import (
    MergeError,
    OnnxExportError,
    OptimizeError,
    PruningError,
    TensorRTBuildError,
    TensorRTUnavailableError,
)

if TYPE_CHECKING:
    from tensorguard.optimize.merge import merge_adapter
    from tensorguard.optimize.onnx_export import (
        DEFAULT_PARITY_TOLERANCE,
        OnnxExportResult,
        export_causal_lm_to_onnx,
        measure_onnx_parity,
    )
    from tensorguard.optimize.pruning import (
        DEFAULT_EXCLUDE,
        PruningOutcome,
        TwoFourReport,
        apply_2_4_sparsity,
        prune_2_4_and_evaluate,
        two_four_mask,
        verify_2_4,
    )
    from tensorguard.optimize.saving import SavedModel, save_model_atomically
    from tensorguard.optimize.tensorrt_build import (
        InputShapeProfile,
        TensorRTBuildResult,
        build_tensorrt_engine,
        require_tensorrt,
    )

__all__ = [
    "DEFAULT_EXCLUDE",
    "DEFAULT_PARITY_TOLERANCE",
    "InputShapeProfile",
    "MergeError",
    "OnnxExportError",
    "OnnxExportResult",
    "OptimizeError",
    "PruningError",
    "PruningOutcome",
    "SavedModel",
    "TensorRTBuildError",
    "TensorRTBuildResult",
    "TensorRTUnavailableError",
    "TwoFourReport",
    "apply_2_4_sparsity",
    "build_tensorrt_engine",
    "export_causal_lm_to_onnx",
    "measure_onnx_parity",
    "merge_adapter",
    "prune_2_4_and_evaluate",
    "require_tensorrt",
    "save_model_atomically",
    "two_four_mask",
    "verify_2_4",
]

# merge, pruning, ONNX and TensorRT need torch, peft, onnx or TensorRT: imported on
# first use, so that importing the errors (or one light module) loads none of them.
_LAZY = {
    "merge_adapter": "tensorguard.optimize.merge",
    "DEFAULT_PARITY_TOLERANCE": "tensorguard.optimize.onnx_export",
    "OnnxExportResult": "tensorguard.optimize.onnx_export",
    "export_causal_lm_to_onnx": "tensorguard.optimize.onnx_export",
    "measure_onnx_parity": "tensorguard.optimize.onnx_export",
    "DEFAULT_EXCLUDE": "tensorguard.optimize.pruning",
    "PruningOutcome": "tensorguard.optimize.pruning",
    "TwoFourReport": "tensorguard.optimize.pruning",
    "apply_2_4_sparsity": "tensorguard.optimize.pruning",
    "prune_2_4_and_evaluate": "tensorguard.optimize.pruning",
    "two_four_mask": "tensorguard.optimize.pruning",
    "verify_2_4": "tensorguard.optimize.pruning",
    "SavedModel": "tensorguard.optimize.saving",
    "save_model_atomically": "tensorguard.optimize.saving",
    "InputShapeProfile": "tensorguard.optimize.tensorrt_build",
    "TensorRTBuildResult": "tensorguard.optimize.tensorrt_build",
    "build_tensorrt_engine": "tensorguard.optimize.tensorrt_build",
    "require_tensorrt": "tensorguard.optimize.tensorrt_build",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())
