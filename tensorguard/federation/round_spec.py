"""What every party must agree on for one round: the round's specification.

The coordinator derives a :class:`RoundSpec` from the round's *reference adapter*
(the adapter all sites start training from: the seeded initial LoRA adapter in the
first round, the previous round's global adapter afterwards). Sites build their
update against it, sign its fields into the envelope, and the aggregator accepts an
update only if those fields match.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tensorguard.federation.layout import TensorLayout, tensors_digest

HEX_DIGEST = re.compile(r"^[0-9a-f]{64}$")
ROUND_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:|-]{0,127}$")


class RoundSpec(BaseModel):
    """Round id, base model, reference adapter, tensor layout and weight scale."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    round_id: str = Field(description="The round's identifier (e.g. its partition key).")
    base_model_digest: str = Field(description="Hex SHA-256 of the base model directory.")
    reference_digest: str = Field(description="tensors_digest of the reference adapter.")
    layout: tuple[tuple[str, tuple[int, ...]], ...] = Field(
        description="Tensor names (sorted) and shapes of the adapter."
    )
    max_site_weight: float = Field(
        gt=0,
        description="Largest weight (example count) one site may declare this round; "
        "weights are divided by it before encryption to bound encoded values.",
    )
    opened_at: datetime | None = Field(
        default=None, description="Updates created before this instant are stale."
    )

    @field_validator("round_id")
    @classmethod
    def _round_id(cls, value: str) -> str:
        if not ROUND_ID.fullmatch(value):
            raise ValueError("round_id must be 1-128 characters of letters, digits and . _ : | -")
        return value

    @field_validator("base_model_digest", "reference_digest")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not HEX_DIGEST.fullmatch(value):
            raise ValueError("digests must be 64 lower-case hex characters (SHA-256)")
        return value

    @field_validator("max_site_weight")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("max_site_weight must be finite")
        return value

    @field_validator("opened_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("opened_at must be timezone-aware")
        return value

    @property
    def tensor_layout(self) -> TensorLayout:
        """The layout as a :class:`TensorLayout` (validated)."""
        return TensorLayout.from_json([[name, list(shape)] for name, shape in self.layout])

    @classmethod
    def from_reference(
        cls,
        round_id: str,
        base_model_digest: str,
        reference: Mapping[str, torch.Tensor],
        max_site_weight: float,
        opened_at: datetime | None = None,
    ) -> RoundSpec:
        """Build the spec from the round's reference adapter tensors."""
        layout = TensorLayout.from_tensors(reference)
        return cls(
            round_id=round_id,
            base_model_digest=base_model_digest,
            reference_digest=tensors_digest(reference),
            layout=tuple((spec.name, spec.shape) for spec in layout.specs),
            max_site_weight=max_site_weight,
            opened_at=opened_at,
        )
