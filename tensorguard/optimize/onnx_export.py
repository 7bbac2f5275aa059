"""Export a causal LM to ONNX, validate it, and measure its parity with PyTorch.

The graph is ``input_ids (int64, [batch, sequence]) -> logits (float, [batch,
sequence, vocab])`` with both axes dynamic, exported by the ``torch.export``-based
exporter (``dynamo=True``) and saved with its weights as external data
(``model.onnx`` + ``model.onnx.data``). Validation is ``onnx.checker`` with full
shape inference; parity is the largest absolute logit difference between
onnxruntime (CPU) and PyTorch on several input shapes.

Determinism: the exporter annotates every node and value with debug provenance in
``metadata_props`` (``pkg.torch.onnx.stack_trace`` holds absolute source paths and
line numbers of the installed packages and of the calling code, next to
``pkg.torch.onnx.fx_node``, ``class_hierarchy``, ``name_scopes`` and ``namespace``).
That text depends on the installation, not on the model, so it is stripped before
saving. Everything that remains (graph, node names, initializers, external data) is
a pure function of the model weights, the architecture and the opset, so exporting
twice gives byte-identical files, also across processes and working directories.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from torch import nn
from torch.export import Dim

from tensorguard.digest import file_manifest, sha256_tree
from tensorguard.durable import atomic_directory
from tensorguard.optimize.errors import OnnxExportError

DEFAULT_OPSET = 18
DEFAULT_PARITY_TOLERANCE = 1e-4
ONNX_FILE_NAME = "model.onnx"
INPUT_NAME = "input_ids"
OUTPUT_NAME = "logits"
BATCH_AXIS = "batch"
SEQUENCE_AXIS = "sequence"
DEFAULT_PARITY_SHAPES: tuple[tuple[int, int], ...] = ((1, 1), (2, 7), (3, 16))
_TRACE_SHAPE = (2, 8)
_PARITY_SEED = 0
# The exporter's op registry warns once per torchvision operator when torchvision is not
# installed; a causal LM never uses those operators, so the lines are only noise.
_REGISTRY_LOGGER = "torch.onnx._internal.exporter._registration"


class _LogitsOnly(nn.Module):
    """The graph handed to the exporter: token ids to logits, no KV cache."""

    def __init__(self, causal_lm: nn.Module) -> None:
        super().__init__()
        self.causal_lm = causal_lm

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.causal_lm(input_ids=input_ids, use_cache=False).logits
        return logits


@dataclass(frozen=True)
class OnnxExportResult:
    """A published ONNX export and its measured parity with PyTorch."""

    path: Path
    model_path: Path
    data_path: Path | None
    files: dict[str, str]
    size_bytes: int
    sha256: str
    opset: int
    max_abs_diff: float
    parity_shapes: tuple[tuple[int, int], ...]

    def within_tolerance(self, tolerance: float = DEFAULT_PARITY_TOLERANCE) -> bool:
        """Whether the measured logit difference is at most ``tolerance``."""
        return self.max_abs_diff <= tolerance


def default_parity_inputs(
    vocab_size: int, shapes: Sequence[tuple[int, int]] = DEFAULT_PARITY_SHAPES
) -> list[torch.Tensor]:
    """Token-id batches for the parity run, from a private fixed-seed generator.

    The fixed seed makes the parity measurement repeatable; it never touches the
    global RNG and is not used on the export path.
    """
    generator = torch.Generator().manual_seed(_PARITY_SEED)
    return [torch.randint(0, vocab_size, shape, generator=generator) for shape in shapes]


def export_causal_lm_to_onnx(
    model: nn.Module,
    destination: Path,
    *,
    opset: int = DEFAULT_OPSET,
    parity_inputs: Sequence[torch.Tensor] | None = None,
) -> OnnxExportResult:
    """Export ``model`` to ``destination/model.onnx``, check it, and measure parity.

    ``destination`` is published atomically. ``parity_inputs`` are ``(batch,
    sequence)`` token-id tensors; by default three shapes from
    :func:`default_parity_inputs`. Raises :class:`OnnxExportError` when the export,
    the checker or the onnxruntime run fails.
    """
    model.eval()
    if parity_inputs is None:
        parity_inputs = default_parity_inputs(_vocab_size(model))
    if not parity_inputs:
        raise OnnxExportError("parity needs at least one input batch of token ids")
    with atomic_directory(destination) as staging:
        _export_graph(model, staging / ONNX_FILE_NAME, opset)
        check_onnx_model(staging / ONNX_FILE_NAME)
        max_abs_diff = measure_onnx_parity(model, staging / ONNX_FILE_NAME, parity_inputs)
    files = file_manifest(destination)
    data_path = destination / f"{ONNX_FILE_NAME}.data"
    return OnnxExportResult(
        path=destination,
        model_path=destination / ONNX_FILE_NAME,
        data_path=data_path if data_path.is_file() else None,
        files=files,
        size_bytes=sum((destination / name).stat().st_size for name in files),
        sha256=sha256_tree(destination),
        opset=opset,
        max_abs_diff=max_abs_diff,
        parity_shapes=tuple((int(t.shape[0]), int(t.shape[1])) for t in parity_inputs),
    )


def _export_graph(model: nn.Module, onnx_path: Path, opset: int) -> None:
    trace_input = torch.zeros(_TRACE_SHAPE, dtype=torch.int64)
    logging.getLogger(_REGISTRY_LOGGER).setLevel(logging.ERROR)
    # torch's exporter still uses a pytree API it deprecated itself; not ours to fix.
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
    try:
        program = torch.onnx.export(
            _LogitsOnly(model).eval(),
            (trace_input,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: {0: Dim(BATCH_AXIS), 1: Dim(SEQUENCE_AXIS)}},
            opset_version=opset,
            verbose=False,
        )
    except (torch.onnx.OnnxExporterError, RuntimeError, ValueError, TypeError) as exc:
        raise OnnxExportError(
            f"torch.onnx.export (dynamo) failed for {type(model).__name__}: {exc}"
        ) from exc
    if program is None:
        raise OnnxExportError("torch.onnx.export returned no ONNX program")
    ir_model = program.model
    for node in ir_model.graph.all_nodes():
        node.metadata_props.clear()
        for output in node.outputs:
            output.metadata_props.clear()
    for value in (*ir_model.graph.inputs, *ir_model.graph.initializers.values()):
        value.metadata_props.clear()
    ir_model.graph.metadata_props.clear()
    ir_model.metadata_props.clear()
    program.save(onnx_path, external_data=True)


def check_onnx_model(onnx_path: Path) -> None:
    """Run ``onnx.checker`` with full shape inference on a model saved with external data."""
    try:
        onnx.checker.check_model(str(onnx_path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise OnnxExportError(f"onnx.checker rejected {onnx_path}: {exc}") from exc


def measure_onnx_parity(model: nn.Module, onnx_path: Path, inputs: Sequence[torch.Tensor]) -> float:
    """Largest absolute logit difference between onnxruntime (CPU) and PyTorch."""
    try:
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped pybind errors
        raise OnnxExportError(f"onnxruntime cannot load {onnx_path}: {exc}") from exc
    wrapped = _LogitsOnly(model).eval()
    worst = 0.0
    for input_ids in inputs:
        with torch.no_grad():
            expected = wrapped(input_ids.to(torch.int64)).float().numpy()
        try:
            (actual,) = session.run([OUTPUT_NAME], {INPUT_NAME: input_ids.to(torch.int64).numpy()})
        except Exception as exc:  # onnxruntime raises its own untyped pybind errors
            raise OnnxExportError(
                f"onnxruntime failed on {onnx_path} for input shape {tuple(input_ids.shape)}: {exc}"
            ) from exc
        if actual.shape != expected.shape:
            raise OnnxExportError(
                f"onnxruntime returned logits of shape {actual.shape}, PyTorch {expected.shape}, "
                f"for input shape {tuple(input_ids.shape)}"
            )
        difference = float(np.max(np.abs(actual.astype(np.float64) - expected)))
        if not np.isfinite(difference):
            raise OnnxExportError(f"non-finite logits from {onnx_path}; parity is undefined")
        worst = max(worst, difference)
    return worst


def _vocab_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    vocab_size = getattr(config, "vocab_size", None)
    if not isinstance(vocab_size, int):
        raise OnnxExportError("the model has no config.vocab_size; pass parity_inputs explicitly")
    return vocab_size
