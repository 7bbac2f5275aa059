"""Building one site's update: delta, clipping, optional DP noise, weighting, CKKS, signing.

The update is the change of the LoRA tensors over the round:
``delta = trained - reference`` for every LoRA tensor, where the *reference* is the
adapter every site started the round from (a seeded initial adapter in round one, so
that all sites share the same random ``A`` and zero ``B``; the previous global adapter
afterwards). Working on the change rather than on the raw tensors keeps clipping and
noise meaningful: ``A``'s random initialisation is not data and is never clipped.

Steps: flatten in the round's canonical layout, clip the L2 norm of the whole delta
to ``clip_norm``, multiply by ``weight / max_site_weight`` (at most 1, so the weighted
contribution still has norm ≤ ``clip_norm``), add Gaussian noise of std
``σ · clip_norm / √min_sites`` when the round spec carries a DP rule (after the site's
privacy ledger agrees; see :mod:`tensorguard.federation._privacy` for why the sum of
the quorum's updates then carries the central noise ``σ · clip_norm``), encrypt under
the federation *public* context, sign. When the round spec sets
``aggregate_grid_bits``, the values are rounded to that fixed-point grid just before
encryption (:mod:`tensorguard.federation._fixed_point`), so that the custodian recovers the
exact sum of the sites, bit for bit, whatever the encryption randomness.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from tensorguard.crypto import CompositeSigner
from tensorguard.federation._context import PublicFederation
from tensorguard.federation._envelope import EnvelopeHeader, seal_envelope
from tensorguard.federation._errors import FederationError, PrivacyAccountingError
from tensorguard.federation._fixed_point import check_grid_bits, quantise
from tensorguard.federation._layout import FloatVector, tensors_digest
from tensorguard.federation._lora_factors import is_lora_a
from tensorguard.federation._masking import SiteMaskSeeds, mask_encrypted_vector, mask_level
from tensorguard.federation._packing import encrypt_vector
from tensorguard.federation._pairwise import PairwiseSecrets
from tensorguard.federation._privacy import (
    DPConfig,
    PrivacyCharge,
    PrivacyLedger,
    PrivacyReport,
    add_gaussian_noise,
)
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.sites import validate_site_id


class SiteUpdateConfig(BaseModel):
    """How a site turns its trained adapter into an update."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    clip_norm: float = Field(gt=0, description="L2 bound on the whole update's delta.")
    dp: DPConfig | None = Field(
        default=None,
        description="The round's DP rule (must equal the round spec's dp); None: no DP.",
    )


@dataclass(frozen=True)
class SiteUpdate:
    """A finished site update: the envelope bytes and what may be reported about it."""

    envelope: bytes
    header: EnvelopeHeader
    privacy: PrivacyReport | None
    encrypt_seconds: float
    site_noise_std: float = 0.0

    def metadata(self) -> dict[str, object]:
        """Reportable values (no plaintext statistics of the update itself)."""
        values: dict[str, object] = {
            "round_id": self.header.round_id,
            "site_id": self.header.site_id,
            "envelope_sha256": hashlib.sha256(self.envelope).hexdigest(),
            "envelope_bytes": len(self.envelope),
            "ciphertexts": self.header.ciphertext_count,
            "values": self.header.layout.numel,
            "expansion_vs_fp32": self.header.payload_bytes / (4 * self.header.layout.numel),
            "weight": self.header.weight,
            "clip_norm": self.header.clip_norm,
            "encrypt_seconds": self.encrypt_seconds,
            "signer_fingerprint": self.header.signer_fingerprint,
        }
        if self.privacy is not None:
            values.update({f"dp_{k}": v for k, v in self.privacy.to_json().items()})
            values["dp_site_noise_std"] = self.site_noise_std
        return values


def clip_l2(values: FloatVector, clip_norm: float) -> FloatVector:
    """Scale ``values`` down so that its L2 norm is at most ``clip_norm``."""
    norm = float(np.linalg.norm(values))
    if not math.isfinite(norm):
        raise FederationError("the update contains NaN or infinite values; refusing to clip")
    if norm <= clip_norm:
        return values
    clipped: FloatVector = values * (clip_norm / norm)
    return clipped


def update_delta(
    trained: Mapping[str, torch.Tensor], reference: Mapping[str, torch.Tensor], spec: RoundSpec
) -> FloatVector:
    """``trained - reference`` flattened in the round layout (after checking both).

    In a round with frozen LoRA A factors, every A of ``trained`` must still equal the
    reference's: a site that trained them would send a delta that no longer averages
    exactly, so it is refused."""
    layout = spec.tensor_layout
    if tensors_digest(reference) != spec.reference_digest:
        raise FederationError(
            f"the reference adapter is not the one round {spec.round_id!r} started from "
            "(digest differs); train from the round's reference adapter"
        )
    if spec.frozen_lora_a:
        if set(trained) != set(reference):
            raise FederationError("the trained adapter holds other tensors than the reference")
        moved = [
            name
            for name in reference
            if is_lora_a(name) and not torch.equal(trained[name], reference[name])
        ]
        if moved:
            raise FederationError(
                f"round {spec.round_id!r} freezes the LoRA A factors, but the trained adapter "
                f"changed {len(moved)} of them (e.g. {moved[0]!r}); train with lora_A frozen"
            )
        trained = {name: trained[name] for name in layout.names}
        reference = {name: reference[name] for name in layout.names}
    layout.check(trained, "the trained adapter")
    layout.check(reference, "the reference adapter")
    delta: FloatVector = layout.flatten(trained) - layout.flatten(reference)
    return delta


def _mask_seeds(spec: RoundSpec, site_id: str, pairwise: PairwiseSecrets | None) -> SiteMaskSeeds:
    """The site's self seed and pairwise round seeds with every other roster site
    (masking is on)."""
    if pairwise is None:
        raise FederationError(
            f"round {spec.round_id!r} requires pairwise masking (epoch {spec.mask_epoch}); "
            "establish the site's pair secrets first"
        )
    expected = set(spec.roster) - {site_id}
    if pairwise.epoch_id != spec.mask_epoch or pairwise.site_id != site_id:
        raise FederationError(
            f"the pair secrets are for site {pairwise.site_id!r} in epoch "
            f"{pairwise.epoch_id!r}; round {spec.round_id!r} needs {site_id!r} in epoch "
            f"{spec.mask_epoch!r}"
        )
    if set(pairwise.peers) != expected:
        raise FederationError(
            f"site {site_id!r} shares secrets with {sorted(pairwise.peers)}, but the round's "
            f"roster needs exactly {sorted(expected)}"
        )
    return pairwise.mask_seeds(spec.round_id)


def build_site_update(
    *,
    trained: Mapping[str, torch.Tensor],
    reference: Mapping[str, torch.Tensor],
    spec: RoundSpec,
    site_id: str,
    weight: float,
    public: PublicFederation,
    signer: CompositeSigner,
    config: SiteUpdateConfig,
    ledger: PrivacyLedger | None = None,
    pairwise: PairwiseSecrets | None = None,
) -> SiteUpdate:
    """Clip, (noise), weight, encrypt and sign one site's update for ``spec``.

    ``weight`` is normally the site's example count. ``config.dp`` must equal the
    round spec's DP rule (both None for no DP). With DP on, ``ledger`` is required; it
    is charged only once the envelope is complete, and a round that would exceed the
    budget raises :class:`PrivacyBudgetExceededError` before any noise is drawn.
    """
    validate_site_id(site_id)
    if not math.isfinite(weight) or not 0 < weight <= spec.max_site_weight:
        raise FederationError(
            f"site weight {weight} must be positive and at most the round's "
            f"max_site_weight {spec.max_site_weight}; raise max_site_weight in the round "
            "spec if sites legitimately hold more examples"
        )
    cap = spec.weight_cap(site_id)
    if cap is None or weight > cap:
        raise FederationError(
            f"site {site_id!r} declares weight {weight}, but the round's site registry "
            f"allows {'none' if cap is None else f'at most {cap}'}; the aggregator would "
            "reject this update. Register the site's weight cap in the site registry"
        )
    if spec.clip_norm is not None and config.clip_norm != spec.clip_norm:
        raise FederationError(
            f"site {site_id!r} clips to {config.clip_norm}, but round {spec.round_id!r} "
            f"requires clip_norm={spec.clip_norm}; use the round's clip norm"
        )
    values = clip_l2(update_delta(trained, reference, spec), config.clip_norm)

    privacy: PrivacyReport | None = None
    charge: PrivacyCharge | None = None
    noise_std = 0.0
    if config.dp != spec.dp:
        raise PrivacyAccountingError(
            f"site {site_id!r} has DP config {_describe_dp(config.dp)}, but round "
            f"{spec.round_id!r} requires {_describe_dp(spec.dp)}; use the round spec's DP "
            "rule (the noise of the sum is calibrated only if every site follows it)"
        )
    if config.dp is not None:
        if ledger is None:
            raise PrivacyAccountingError(
                f"site {site_id!r} has DP enabled but no privacy ledger was supplied"
            )
        if ledger.site_id != site_id:
            raise PrivacyAccountingError(
                f"the privacy ledger belongs to {ledger.site_id!r}, not {site_id!r}"
            )
        ledger.check_config(config.dp)
        charge = PrivacyCharge(round_id=spec.round_id, noise_multiplier=config.dp.noise_multiplier)
        ledger.check(charge)
        noise_std = config.dp.site_noise_std(config.clip_norm, spec.min_sites)

    values = values * (weight / spec.max_site_weight)
    if charge is not None:
        values = add_gaussian_noise(values, noise_std)
    if spec.aggregate_grid_bits is not None:
        bits = check_grid_bits(public.params, spec.aggregate_grid_bits, spec.tensor_layout.numel)
        values = quantise(values, bits)
    started = time.perf_counter()
    context = public.load_context()
    encrypted = encrypt_vector(values, context, public.params, spec.ckks_packing)
    if spec.mask_epoch is not None:
        seeds = _mask_seeds(spec, site_id, pairwise)
        encrypted = mask_encrypted_vector(
            encrypted, site_id, seeds, mask_level(context, public.params)
        )
    payload = encrypted.to_bytes()
    encrypt_seconds = time.perf_counter() - started

    if charge is not None and ledger is not None:
        privacy = ledger.charge(charge)
    header = EnvelopeHeader(
        round_id=spec.round_id,
        site_id=site_id,
        base_model_digest=spec.base_model_digest,
        reference_digest=spec.reference_digest,
        public_context_sha256=public.digest,
        layout=spec.tensor_layout,
        weight=float(weight),
        max_site_weight=spec.max_site_weight,
        clip_norm=config.clip_norm,
        dp=privacy.to_json() if privacy is not None else None,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_bytes=len(payload),
        ciphertext_count=encrypted.ciphertext_count,
        nonce=secrets.token_hex(16),
        created_at=datetime.now(UTC),
        signer_fingerprint=signer.public_key().fingerprint(),
    )
    envelope = seal_envelope(header, payload, signer)
    return SiteUpdate(envelope, header, privacy, encrypt_seconds, noise_std)


def _describe_dp(rule: DPConfig | None) -> str:
    """A DP rule in words for error messages."""
    if rule is None:
        return "none (no DP)"
    return (
        f"noise_multiplier={rule.noise_multiplier:g}, δ={rule.delta:g}, "
        f"budget ε={rule.epsilon_budget:g}"
    )
