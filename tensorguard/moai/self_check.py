"""Evaluate one exported linear module under real CKKS encryption (TenSEAL).

The check plays both roles of encrypted inference on one machine: it builds a CKKS
context from the manifest's parameters (a throwaway secret key that never leaves
memory), encrypts an input vector chunk by chunk, lets the "server" compute
``Enc(x) · Wᵀ + b`` from the exported blocks with TenSEAL's vector-matrix product,
decrypts, and compares with the same product in float64 plaintext. The reported
error is the CKKS approximation error of this module on this input, so it is never
exactly zero.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tenseal
import torch

from tensorguard.moai.block_layout import CkksParameters, unpack_weight
from tensorguard.moai.errors import MoaiExportError
from tensorguard.moai.manifest import ExportedModule, find_module_record, read_manifest, read_module

DEFAULT_SELF_CHECK_TOLERANCE = 1e-4
DEFAULT_INPUT_SEED = 0


@dataclass(frozen=True)
class CkksSelfCheckResult:
    """Measured CKKS error of one exported module against plaintext."""

    module: str
    in_features: int
    out_features: int
    max_abs_error: float
    plaintext_max_abs: float
    tolerance: float
    ckks: CkksParameters
    seconds: float

    @property
    def passed(self) -> bool:
        """Whether the CKKS result matches plaintext within :attr:`tolerance`."""
        return self.max_abs_error <= self.tolerance

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, for reports and metadata tables."""
        return {
            "module": self.module,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "max_abs_error": self.max_abs_error,
            "plaintext_max_abs": self.plaintext_max_abs,
            "tolerance": self.tolerance,
            "passed": self.passed,
            "ckks": self.ckks.as_dict(),
            "seconds": self.seconds,
        }


def run_ckks_self_check(
    export_dir: Path,
    *,
    module: str | None = None,
    tolerance: float = DEFAULT_SELF_CHECK_TOLERANCE,
    input_seed: int = DEFAULT_INPUT_SEED,
) -> CkksSelfCheckResult:
    """Encrypt an input, evaluate one exported module homomorphically, decrypt, compare.

    ``module`` defaults to the export's smallest module (cheapest to evaluate). The
    input is uniform in [-1, 1) from a private generator seeded with ``input_seed``.
    The module file's SHA-256 is checked against the manifest before use.
    """
    manifest = read_manifest(export_dir)
    parameters = CkksParameters.from_dict(manifest["ckks"])
    record = find_module_record(manifest, module or _smallest_module(manifest))
    exported = read_module(export_dir, record)
    started = time.perf_counter()
    inputs = np.random.default_rng(input_seed).uniform(-1.0, 1.0, exported.grid.in_features)
    encrypted_output = _evaluate_encrypted(exported, parameters, inputs)
    weight = unpack_weight(exported.weight_blocks, exported.grid).to(torch.float64).numpy()
    expected = inputs @ weight.T
    if exported.bias is not None:
        expected = expected + exported.bias.to(torch.float64).numpy()
    error = float(np.max(np.abs(encrypted_output - expected)))
    if not np.isfinite(error):
        raise MoaiExportError(f"CKKS evaluation of {record['name']} produced non-finite values")
    return CkksSelfCheckResult(
        module=str(record["name"]),
        in_features=exported.grid.in_features,
        out_features=exported.grid.out_features,
        max_abs_error=error,
        plaintext_max_abs=float(np.max(np.abs(expected))),
        tolerance=tolerance,
        ckks=parameters,
        seconds=time.perf_counter() - started,
    )


def _smallest_module(manifest: dict[str, Any]) -> str:
    records = manifest["modules"]
    smallest = min(
        records, key=lambda r: (int(r["in_features"]) * int(r["out_features"]), r["name"])
    )
    return str(smallest["name"])


def _evaluate_encrypted(
    exported: ExportedModule, parameters: CkksParameters, inputs: np.ndarray[Any, Any]
) -> np.ndarray[Any, np.dtype[np.float64]]:
    grid = exported.grid
    context = tenseal.context(
        tenseal.SCHEME_TYPE.CKKS,
        poly_modulus_degree=parameters.poly_modulus_degree,
        coeff_mod_bit_sizes=list(parameters.coeff_mod_bit_sizes),
    )
    context.global_scale = 2.0**parameters.global_scale_bits
    context.generate_galois_keys()
    input_chunks = _zero_padded(inputs, grid.grid_rows, grid.block_rows)
    encrypted_chunks = [tenseal.ckks_vector(context, chunk.tolist()) for chunk in input_chunks]
    blocks = exported.weight_blocks.to(torch.float64).numpy()
    bias_chunks = None
    if exported.bias is not None:
        bias = exported.bias.to(torch.float64).numpy()
        bias_chunks = _zero_padded(bias, grid.grid_cols, grid.block_cols)
    outputs: list[float] = []
    for j in range(grid.grid_cols):
        accumulator = encrypted_chunks[0].matmul(blocks[0, j].tolist())
        for i in range(1, grid.grid_rows):
            accumulator = accumulator + encrypted_chunks[i].matmul(blocks[i, j].tolist())
        if bias_chunks is not None:
            accumulator = accumulator + bias_chunks[j].tolist()
        outputs.extend(accumulator.decrypt())
    return np.asarray(outputs[: grid.out_features], dtype=np.float64)


def _zero_padded(
    values: np.ndarray[Any, Any], chunks: int, chunk_size: int
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """``values`` zero-padded to ``chunks * chunk_size`` and split into rows."""
    padded = np.zeros(chunks * chunk_size, dtype=np.float64)
    padded[: values.shape[0]] = values
    return padded.reshape(chunks, chunk_size)
