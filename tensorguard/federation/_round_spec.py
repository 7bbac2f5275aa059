"""What every party must agree on for one round: the round's specification.

The coordinator derives a :class:`RoundSpec` from the round's *reference adapter*
(the adapter all sites start training from: the seeded initial LoRA adapter in the
first round, the previous round's global adapter afterwards). Sites build their
update against it, sign its fields into the envelope, and the aggregator accepts an
update only if those fields match.

The spec also carries the round's *rules*, fixed by the coordinator rather than
declared by the sites: when the round opened and when it closes, the quorum, the
clip norm every site must apply, the differential-privacy rule, and each registered
site's weight cap (from the site registry). The aggregator and the custodian enforce them; see
:mod:`tensorguard.federation._aggregation` and :mod:`tensorguard.federation._custodian`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Literal, get_args

import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    ValidationError,
    field_validator,
    model_validator,
)

from tensorguard.codec import (
    CodecError,
    Sha256Hex,
    StrictModel,
    canonical_json,
    describe_validation_error,
    parse_json_object,
    validate_model,
)
from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, SignatureError
from tensorguard.federation._errors import FederationError
from tensorguard.federation._layout import TensorLayout, tensors_digest
from tensorguard.federation._lora_factors import is_lora_a
from tensorguard.federation._packing import Packing
from tensorguard.federation._privacy import DPRule
from tensorguard.federation._server_optimizer import ServerOptimizerRule

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
    deadline: datetime | None = Field(
        default=None,
        description="Updates created after this instant are late; at the deadline the "
        "round aggregates the sites that made it (if the quorum is met) or fails closed.",
    )
    min_sites: int = Field(
        default=2, ge=2, description="Quorum: fewest valid site updates the round needs."
    )
    clip_norm: float | None = Field(
        default=None,
        gt=0,
        description="L2 bound every site must clip its delta to (None: sites choose).",
    )
    mask_epoch: str | None = Field(
        default=None,
        description="Key epoch of the sites' pairwise masks (secure aggregation); every "
        "roster site masks its ciphertexts with its pair secrets of this epoch. None: no "
        "masking.",
    )
    site_weight_caps: tuple[tuple[str, float], ...] = Field(
        default=(),
        description="Registered sites and the largest weight each may declare, from the "
        "site registry (empty: only max_site_weight applies).",
    )
    dp: DPRule | None = Field(
        default=None,
        description="Distributed differential privacy: every site adds noise of std "
        "noise_multiplier · clip_norm / √min_sites (needs clip_norm). None: no DP.",
    )
    server_optimizer: ServerOptimizerRule = Field(
        default_factory=ServerOptimizerRule,
        description="How the custodian turns the decrypted mean update into the next "
        "global adapter (FedAvg with a server learning rate, FedAdam or FedYogi).",
    )
    frozen_lora_a: bool = Field(
        default=False,
        description="Sites train only the LoRA B factors; every A stays the reference's "
        "(FFA-LoRA). The layout then holds the B factors only, so the mean of the sites' "
        "adapters is exactly the mean of their weight deltas, and half as much is encrypted.",
    )
    aggregate_grid_bits: int | None = Field(
        default=None,
        ge=1,
        le=52,
        description="Deterministic decoding: sites round their weighted update to multiples "
        "of 2^-k before encryption and the custodian rounds the decrypted sum to the same "
        "grid, so the aggregate is exact and reproducible (see "
        "tensorguard.federation._fixed_point). None: the raw CKKS decryption is used.",
    )
    ckks_packing: Packing = Field(
        default=Packing.REAL,
        description="How sites pack values into CKKS slots: 'complex' (two values per slot, "
        "half the ciphertexts; what from_reference chooses) or 'real' (one value per slot). "
        "The custodian decodes with the layout the spec names. A signed spec without this "
        "field predates complex packing and means 'real', the only packing sites used then.",
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

    @field_validator("opened_at", "deadline")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("opened_at and deadline must be timezone-aware")
        return value

    @field_validator("clip_norm")
    @classmethod
    def _finite_clip(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("clip_norm must be finite")
        return value

    @field_validator("site_weight_caps")
    @classmethod
    def _caps(cls, value: tuple[tuple[str, float], ...]) -> tuple[tuple[str, float], ...]:
        names = [name for name, _ in value]
        if len(set(names)) != len(names):
            raise ValueError("site_weight_caps lists a site twice")
        if any(not (math.isfinite(cap) and cap > 0) for _, cap in value):
            raise ValueError("every site weight cap must be a positive finite number")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _rules_consistent(self) -> RoundSpec:
        if self.opened_at and self.deadline and self.deadline <= self.opened_at:
            raise ValueError("the round's deadline must be after opened_at")
        if any(cap > self.max_site_weight for _, cap in self.site_weight_caps):
            raise ValueError("a site weight cap exceeds max_site_weight")
        if self.site_weight_caps and self.min_sites > len(self.site_weight_caps):
            raise ValueError("min_sites exceeds the number of registered sites")
        if self.dp is not None and self.clip_norm is None:
            raise ValueError("a DP rule needs the round's clip_norm (the noise scales with it)")
        if self.mask_epoch is not None and not self.site_weight_caps:
            raise ValueError("pairwise masking needs the round's roster (site_weight_caps)")
        if self.mask_epoch is not None and not ROUND_ID.fullmatch(self.mask_epoch):
            raise ValueError("mask_epoch must look like a round id")
        return self

    @property
    def roster(self) -> tuple[str, ...]:
        """The round's enrolled sites (those with a weight cap), sorted."""
        return tuple(site for site, _ in self.site_weight_caps)

    def weight_cap(self, site_id: str) -> float | None:
        """The largest weight ``site_id`` may declare, or None if it is not allowed.

        Without per-site caps every site may declare up to ``max_site_weight``.
        """
        if not self.site_weight_caps:
            return self.max_site_weight
        return dict(self.site_weight_caps).get(site_id)

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
        *,
        deadline: datetime | None = None,
        min_sites: int = 2,
        clip_norm: float | None = None,
        site_weight_caps: Mapping[str, float] | None = None,
        mask_epoch: str | None = None,
        dp: DPRule | None = None,
        frozen_lora_a: bool = False,
        server_optimizer: ServerOptimizerRule | None = None,
        aggregate_grid_bits: int | None = None,
        ckks_packing: Packing = Packing.COMPLEX,
    ) -> RoundSpec:
        """Build the spec from the round's reference adapter tensors and the round rules.

        With ``frozen_lora_a`` the layout (what sites send) holds only the tensors that
        are not LoRA A factors; the reference digest still covers every tensor."""
        layout = TensorLayout.from_tensors(
            {
                name: tensor
                for name, tensor in reference.items()
                if not frozen_lora_a or not is_lora_a(name)
            }
        )
        if not layout.specs:
            raise ValueError(
                "the round layout is empty: the reference adapter has no tensors to train"
            )
        return cls(
            round_id=round_id,
            base_model_digest=base_model_digest,
            reference_digest=tensors_digest(reference),
            layout=tuple((spec.name, spec.shape) for spec in layout.specs),
            max_site_weight=max_site_weight,
            opened_at=opened_at,
            deadline=deadline,
            min_sites=min_sites,
            clip_norm=clip_norm,
            site_weight_caps=tuple(sorted((site_weight_caps or {}).items())),
            mask_epoch=mask_epoch,
            dp=dp,
            frozen_lora_a=frozen_lora_a,
            server_optimizer=server_optimizer or ServerOptimizerRule(),
            aggregate_grid_bits=aggregate_grid_bits,
            ckks_packing=ckks_packing,
        )


SignedRoundSpecFormat = Literal["tensorguard.federation.signed-round-spec/v1"]
ROUND_SPEC_FORMAT: str = get_args(SignedRoundSpecFormat)[0]
ROUND_SPEC_SIGNATURE_CONTEXT = b"tensorguard/federation/round-spec/v1"


class _SignedSpecDocument(StrictModel):
    """The wrapper :func:`sign_round_spec` writes; ``spec`` is checked as a
    :class:`RoundSpec` only after its signature verifies."""

    format: SignedRoundSpecFormat
    spec: dict[str, JsonValue]
    signer_fingerprint: Sha256Hex
    signature: Annotated[str, Field(pattern=r"^(?:[0-9a-f]{2})+$")]


def sign_round_spec(spec: RoundSpec, signer: CompositeSigner) -> bytes:
    """The spec as a signed document: RFC 8785 JSON of the spec, composite-signed by the
    round's coordinator, so that no party can change a round rule after the round opened."""
    body = spec.model_dump(mode="json")
    signature = signer.sign(canonical_json(body), ROUND_SPEC_SIGNATURE_CONTEXT)
    return canonical_json(
        {
            "format": ROUND_SPEC_FORMAT,
            "spec": body,
            "signer_fingerprint": signer.public_key().fingerprint(),
            "signature": signature.hex(),
        }
    )


def load_signed_round_spec(data: bytes, coordinator: CompositeVerifyKey) -> RoundSpec:
    """Verify a document from :func:`sign_round_spec` under the pinned coordinator key."""
    remedy = "Re-open the round (round_spec) rather than editing the spec"
    what = "signed round spec"
    try:
        document = validate_model(
            _SignedSpecDocument, parse_json_object(data, what=what), what=what
        )
    except CodecError as exc:
        raise FederationError(f"{exc}. {remedy}") from None
    try:
        if document.signer_fingerprint != coordinator.fingerprint():
            raise ValueError("it was signed by another key than the pinned coordinator's")
        coordinator.verify(
            canonical_json(document.spec),
            bytes.fromhex(document.signature),
            ROUND_SPEC_SIGNATURE_CONTEXT,
        )
    except (SignatureError, ValueError) as exc:
        raise FederationError(
            f"the round spec does not verify under the coordinator's key ({exc}); it was "
            f"altered after the round opened or comes from another coordinator. {remedy}"
        ) from exc
    try:
        return RoundSpec.model_validate(document.spec)
    except ValidationError as exc:
        raise FederationError(
            f"the signed round spec verifies but its rules do not validate: "
            f"{describe_validation_error(exc)}. {remedy}"
        ) from None
