"""The order and shapes of the tensors a site update carries, and their digest.

A :class:`TensorLayout` lists tensor names (sorted, so every party derives the same
order) with their shapes. Flattening concatenates the tensors in that order into one
float64 vector, which is what gets packed into CKKS slots; unflattening reverses it.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from tensorguard.federation._errors import LayoutError

FloatVector = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor's shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)


@dataclass(frozen=True)
class TensorLayout:
    """Tensor names and shapes in canonical (sorted by name) order."""

    specs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        names = [spec.name for spec in self.specs]
        if not names:
            raise LayoutError("a tensor layout needs at least one tensor")
        if names != sorted(names) or len(set(names)) != len(names):
            raise LayoutError("tensor layout names must be unique and sorted")
        for spec in self.specs:
            if not spec.name or any(dim < 0 for dim in spec.shape):
                raise LayoutError(f"invalid tensor spec {spec.name!r} {spec.shape}")

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> TensorLayout:
        """The layout of a state dict (names sorted)."""
        return cls(tuple(TensorSpec(name, tuple(tensors[name].shape)) for name in sorted(tensors)))

    @classmethod
    def from_json(cls, entries: Sequence[object]) -> TensorLayout:
        """Parse ``[[name, [dim, ...]], ...]`` as written by :meth:`to_json`."""
        specs: list[TensorSpec] = []
        for entry in entries:
            if (
                not isinstance(entry, list | tuple)
                or len(entry) != 2
                or not isinstance(entry[0], str)
                or not isinstance(entry[1], list | tuple)
                or not all(isinstance(dim, int) and not isinstance(dim, bool) for dim in entry[1])
            ):
                raise LayoutError(f"layout entry {entry!r} is not [name, [dims...]]")
            specs.append(TensorSpec(entry[0], tuple(entry[1])))
        return cls(tuple(specs))

    def to_json(self) -> list[list[object]]:
        """``[[name, [dim, ...]], ...]``: JSON-ready."""
        return [[spec.name, list(spec.shape)] for spec in self.specs]

    @property
    def numel(self) -> int:
        """Total number of values across all tensors."""
        return sum(spec.numel for spec in self.specs)

    @property
    def names(self) -> tuple[str, ...]:
        """Tensor names in canonical order."""
        return tuple(spec.name for spec in self.specs)

    def check(self, tensors: Mapping[str, torch.Tensor], what: str) -> None:
        """Raise :class:`LayoutError` unless ``tensors`` has exactly this layout."""
        missing = sorted(set(self.names) - set(tensors))
        extra = sorted(set(tensors) - set(self.names))
        if missing or extra:
            raise LayoutError(
                f"{what} does not match the round layout: missing {missing[:5]}, "
                f"unexpected {extra[:5]}"
            )
        for spec in self.specs:
            shape = tuple(tensors[spec.name].shape)
            if shape != spec.shape:
                raise LayoutError(
                    f"{what}: tensor {spec.name!r} has shape {shape}, the round expects "
                    f"{spec.shape}"
                )

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> FloatVector:
        """Concatenate ``tensors`` in layout order into one float64 vector."""
        self.check(tensors, "tensors to flatten")
        parts = [
            tensors[spec.name].detach().to(device="cpu", dtype=torch.float64).reshape(-1)
            for spec in self.specs
        ]
        flat: FloatVector = torch.cat(parts).numpy()
        return flat

    def unflatten(
        self, vector: FloatVector, dtype: torch.dtype = torch.float32
    ) -> dict[str, torch.Tensor]:
        """Split a flat vector back into named tensors of this layout."""
        if vector.shape != (self.numel,):
            raise LayoutError(
                f"vector of shape {vector.shape} does not hold the {self.numel} values "
                "of this layout"
            )
        tensors: dict[str, torch.Tensor] = {}
        offset = 0
        for spec in self.specs:
            chunk = vector[offset : offset + spec.numel].reshape(spec.shape)
            tensors[spec.name] = torch.from_numpy(np.array(chunk, dtype=np.float64)).to(dtype)
            offset += spec.numel
        return tensors


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hex SHA-256 over names, dtypes, shapes and raw bytes, in sorted name order.

    Identical state dicts give identical digests whatever their insertion order.
    """
    hasher = hashlib.sha256(b"tensorguard.tensors/v1\0")
    for name in sorted(tensors):
        tensor = tensors[name].detach().to("cpu").contiguous()
        header = f"{name}\0{tensor.dtype}\0{list(tensor.shape)}\0".encode()
        hasher.update(struct.pack(">I", len(header)) + header)
        data = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
        hasher.update(struct.pack(">Q", len(data)) + data)
    return hasher.hexdigest()
