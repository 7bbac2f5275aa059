"""CKKS parameters and the row-block layout of linear weights for encrypted inference.

A linear module computes ``y = x Wᵀ + b`` with ``W`` of shape ``(out, in)``. For a
client holding an encrypted ``x`` (one CKKS ciphertext per chunk of ``R`` inputs)
the server needs the plaintext matrix ``Wᵀ`` cut into blocks that fit a
ciphertext: ``R`` rows (inputs) by ``C`` columns (outputs), both at most half the
slot count. Block ``(i, j)`` holds ``Wᵀ[i R : (i+1) R, j C : (j+1) C]``, zero-padded
at the edges, and the exported tensor ``weight_blocks`` has shape
``(ceil(in / R), ceil(out / C), R, C)``. Output chunk ``j`` is
``sum_i Enc(x_i) · block(i, j)``, a vector-matrix product that TenSEAL evaluates
with the Halevi–Shoup diagonal method (one plaintext multiplication, ``R``
rotations), then ``+ b_j`` in plaintext. The packed values are the module's
weights converted exactly to float32 (float64 sources stay float64), so unpacking
returns the source tensor bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from tensorguard.federation import he_standard_violation
from tensorguard.moai.errors import MoaiExportError

SECURITY_LEVEL_BITS = 128


@dataclass(frozen=True)
class CkksParameters:
    """CKKS encryption parameters, checked against the HE Standard's 128-bit limits.

    The default (ring degree 8192, moduli 60/40/40/60 bits, scale 2^40) gives 4096
    slots, one rescaling level for the vector-matrix product plus one spare, and
    200 of the 218 bits allowed for 128-bit security.
    """

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 40, 40, 60)
    global_scale_bits: int = 40

    def __post_init__(self) -> None:
        if len(self.coeff_mod_bit_sizes) < 3:
            raise MoaiExportError(
                "coeff_mod_bit_sizes needs at least three primes (base, one rescaling "
                "level, special prime) for a plaintext-ciphertext product"
            )
        violation = he_standard_violation(
            self.poly_modulus_degree, self.coeff_mod_bit_sizes, SECURITY_LEVEL_BITS
        )
        if violation is not None:
            raise MoaiExportError(violation)
        if any(bits != self.global_scale_bits for bits in self.coeff_mod_bit_sizes[1:-1]):
            raise MoaiExportError(
                "the middle coefficient moduli must equal global_scale_bits so that "
                "rescaling keeps the scale stable"
            )

    @property
    def slot_count(self) -> int:
        """Number of real values one ciphertext packs."""
        return self.poly_modulus_degree // 2

    @property
    def max_block_size(self) -> int:
        """Largest block side used by the layout: half the slot count."""
        return self.slot_count // 2

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, as recorded in the manifest."""
        return {
            "scheme": "CKKS",
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "global_scale_bits": self.global_scale_bits,
            "slot_count": self.slot_count,
            "security_level_bits": SECURITY_LEVEL_BITS,
            "galois_keys_required": True,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CkksParameters:
        """Rebuild parameters from :meth:`as_dict` output."""
        try:
            return cls(
                poly_modulus_degree=int(data["poly_modulus_degree"]),
                coeff_mod_bit_sizes=tuple(int(bits) for bits in data["coeff_mod_bit_sizes"]),
                global_scale_bits=int(data["global_scale_bits"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MoaiExportError(f"invalid CKKS parameters in manifest: {exc}") from exc


@dataclass(frozen=True)
class BlockGrid:
    """How one ``(out, in)`` weight is cut into ``R x C`` blocks of ``Wᵀ``."""

    in_features: int
    out_features: int
    block_rows: int
    block_cols: int

    @property
    def grid_rows(self) -> int:
        """Number of input chunks (ciphertexts per input vector)."""
        return math.ceil(self.in_features / self.block_rows)

    @property
    def grid_cols(self) -> int:
        """Number of output chunks."""
        return math.ceil(self.out_features / self.block_cols)

    @property
    def packed_shape(self) -> tuple[int, int, int, int]:
        """Shape of the exported ``weight_blocks`` tensor."""
        return (self.grid_rows, self.grid_cols, self.block_rows, self.block_cols)


def block_grid(out_features: int, in_features: int, block_size: int) -> BlockGrid:
    """Choose block sides: ``block_size``, shrunk to the matrix where it is smaller."""
    if block_size < 1:
        raise MoaiExportError(f"block size must be positive, got {block_size}")
    return BlockGrid(
        in_features=in_features,
        out_features=out_features,
        block_rows=min(block_size, in_features),
        block_cols=min(block_size, out_features),
    )


def packed_dtype(source: torch.dtype) -> torch.dtype:
    """float64 for float64 sources, float32 (an exact widening) for the others."""
    if not source.is_floating_point:
        raise MoaiExportError(f"linear weights must be floating point, got {source}")
    return torch.float64 if source == torch.float64 else torch.float32


def pack_weight(weight: torch.Tensor, grid: BlockGrid) -> torch.Tensor:
    """Cut ``Wᵀ`` into the zero-padded blocks of ``grid``."""
    out_features, in_features = weight.shape
    if (out_features, in_features) != (grid.out_features, grid.in_features):
        raise MoaiExportError(
            f"weight shape {(out_features, in_features)} does not match the block grid "
            f"{(grid.out_features, grid.in_features)}"
        )
    rows = grid.grid_rows * grid.block_rows
    cols = grid.grid_cols * grid.block_cols
    padded = torch.zeros((rows, cols), dtype=packed_dtype(weight.dtype))
    padded[:in_features, :out_features] = weight.detach().to("cpu").T
    blocks = padded.reshape(grid.grid_rows, grid.block_rows, grid.grid_cols, grid.block_cols)
    return blocks.permute(0, 2, 1, 3).contiguous()


def unpack_weight(blocks: torch.Tensor, grid: BlockGrid) -> torch.Tensor:
    """Invert :func:`pack_weight`: return ``W`` of shape ``(out, in)``."""
    if tuple(blocks.shape) != grid.packed_shape:
        raise MoaiExportError(
            f"weight_blocks shape {tuple(blocks.shape)} does not match the manifest grid "
            f"{grid.packed_shape}"
        )
    padded = blocks.permute(0, 2, 1, 3).reshape(
        grid.grid_rows * grid.block_rows, grid.grid_cols * grid.block_cols
    )
    return padded[: grid.in_features, : grid.out_features].T.contiguous()
