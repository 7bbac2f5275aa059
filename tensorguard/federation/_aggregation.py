"""The aggregator: verify site envelopes, enforce the quorum, sum ciphertexts.

The aggregator holds only the federation's *public* context; it refuses to run if a
secret key is present. Each envelope is checked in this order, and the first failed
check becomes its rejection reason:

1. framing parses (``malformed``);
2. the claimed site is registered (``unknown_site``);
3. the composite signature verifies under that site's key and the payload matches the
   signed digest (``bad_signature``; covers unsigned and tampered envelopes);
4. it is for this round (``wrong_round``), not created before the round opened
   (``stale``) nor after its deadline (``late``); same base model
   (``wrong_base_model``), reference adapter (``wrong_reference``), federation key
   (``wrong_context``) and tensor layout (``layout_mismatch``); a weight within the
   round's bound (``invalid_weight``) and within the site's registered cap
   (``over_weight_cap``); the round's clip norm (``wrong_clip_norm``);
5. one update per site: byte-identical copies are dropped (``replayed``) and the
   first copy counts; a site that signed two *different* updates for the round is
   excluded entirely (``conflicting_updates``), since either could be the wrong one;
6. every ciphertext parses and sits at the federation's level and scale
   (``invalid_ciphertext``).

The remaining updates are summed homomorphically (weights were applied by the sites
and are bound by their signatures). Fewer than ``min_sites`` fails the round with
:class:`QuorumNotMetError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import tenseal as ts
from pydantic import AfterValidator, Field

from tensorguard._codec_schema import Sha256Hex, StrictModel, validate_model
from tensorguard.codec import (
    CodecError,
    FrameReader,
    FrameWriter,
    canonical_json,
    parse_json_object,
)
from tensorguard.crypto import CompositeVerifyKey
from tensorguard.federation._ciphertext_sum import CiphertextSum
from tensorguard.federation._context import PublicFederation
from tensorguard.federation._envelope import EnvelopeHeader, SealedEnvelope
from tensorguard.federation._errors import (
    CiphertextError,
    ContextError,
    EnvelopeError,
    FederationError,
    QuorumNotMetError,
)
from tensorguard.federation._round_spec import RoundSpec

RESULT_MAGIC = b"TGFA"
RESULT_VERSION = 1
RESULT_FORMAT = "tensorguard.federation.aggregate/v1"
UNREADABLE_SITE = "<unreadable>"
SCREEN_THREADS = min(4, os.cpu_count() or 1)
"""Threads that screen envelopes (signature, header, payload digest) at once."""


class RejectionReason(StrEnum):
    """Why an envelope was left out of the aggregate."""

    MALFORMED = "malformed"
    UNKNOWN_SITE = "unknown_site"
    BAD_SIGNATURE = "bad_signature"
    WRONG_ROUND = "wrong_round"
    STALE = "stale"
    LATE = "late"
    WRONG_BASE_MODEL = "wrong_base_model"
    WRONG_REFERENCE = "wrong_reference"
    WRONG_CONTEXT = "wrong_context"
    LAYOUT_MISMATCH = "layout_mismatch"
    INVALID_WEIGHT = "invalid_weight"
    OVER_WEIGHT_CAP = "over_weight_cap"
    WRONG_CLIP_NORM = "wrong_clip_norm"
    WRONG_DP = "wrong_dp"
    REPLAYED = "replayed"
    CONFLICTING_UPDATES = "conflicting_updates"
    INVALID_CIPHERTEXT = "invalid_ciphertext"


@dataclass(frozen=True)
class Rejection:
    """One refused envelope. ``site_id`` is as claimed (unverified for some reasons)."""

    site_id: str
    reason: RejectionReason
    detail: str


@dataclass(frozen=True)
class AcceptedUpdate:
    """One update counted in the aggregate."""

    site_id: str
    weight: float
    envelope_sha256: str
    signer_fingerprint: str


def _is_result_format(value: str) -> str:
    if value != RESULT_FORMAT:
        raise ValueError(f"must be {RESULT_FORMAT!r}, not {value!r}")
    return value


class _AcceptedRecord(StrictModel):
    site_id: str
    weight: float
    envelope_sha256: Sha256Hex
    signer_fingerprint: Sha256Hex


class _RejectionRecord(StrictModel):
    site_id: str
    reason: RejectionReason = Field(strict=False)  # the enum's JSON value
    detail: str


class _ResultHeader(StrictModel):
    """The JSON header of a stored aggregation result (see :meth:`AggregationResult.to_bytes`)."""

    format: Annotated[str, AfterValidator(_is_result_format)]
    spec: RoundSpec
    public_context_sha256: Sha256Hex
    accepted: list[_AcceptedRecord]
    rejected: list[_RejectionRecord]


@dataclass(frozen=True)
class AggregationResult:
    """The encrypted weighted sum and the record of what went into it."""

    spec: RoundSpec
    public_context_sha256: str
    accepted: tuple[AcceptedUpdate, ...]
    rejected: tuple[Rejection, ...]
    payload: bytes

    @property
    def total_weight(self) -> float:
        """Sum of accepted sites' weights (example counts)."""
        return sum(update.weight for update in self.accepted)

    @property
    def rejections(self) -> list[tuple[str, str]]:
        """``(site_id, reason)`` pairs for metadata."""
        return [(r.site_id, r.reason.value) for r in self.rejected]

    def metadata(self) -> dict[str, object]:
        """Plain values describing the aggregate (no plaintext of any update)."""
        return {
            "round_id": self.spec.round_id,
            "accepted_sites": [u.site_id for u in self.accepted],
            "accepted_count": len(self.accepted),
            "rejected": [
                {"site_id": r.site_id, "reason": r.reason.value, "detail": r.detail}
                for r in self.rejected
            ],
            "total_weight": self.total_weight,
            "public_context_sha256": self.public_context_sha256,
            "payload_bytes": len(self.payload),
        }

    def _header(self) -> dict[str, Any]:
        return {
            "format": RESULT_FORMAT,
            "spec": self.spec.model_dump(mode="json"),
            "public_context_sha256": self.public_context_sha256,
            "accepted": [
                {
                    "site_id": u.site_id,
                    "weight": u.weight,
                    "envelope_sha256": u.envelope_sha256,
                    "signer_fingerprint": u.signer_fingerprint,
                }
                for u in self.accepted
            ],
            "rejected": [
                {"site_id": r.site_id, "reason": r.reason.value, "detail": r.detail}
                for r in self.rejected
            ],
        }

    def to_bytes(self) -> bytes:
        """``b"TGFA" | 1 | header_len u32 | RFC 8785 JSON header | payload_len u64 | payload``."""
        return (
            FrameWriter(RESULT_MAGIC, RESULT_VERSION)
            .frame(canonical_json(self._header()), length_size=4)
            .frame(self.payload, length_size=8)
            .to_bytes()
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> AggregationResult:
        """Parse :meth:`to_bytes` output."""
        try:
            reader = FrameReader(
                data, magic=RESULT_MAGIC, version=RESULT_VERSION, what="aggregation result"
            )
            document = parse_json_object(
                reader.frame_view(length_size=4, max_bytes=None, field="header"),
                what="aggregation result header",
            )
            payload = reader.frame(length_size=8, max_bytes=None, field="payload")
            reader.finish()
            header = validate_model(_ResultHeader, document, what="aggregation result header")
            return cls(
                spec=header.spec,
                public_context_sha256=header.public_context_sha256,
                accepted=tuple(
                    AcceptedUpdate(
                        site_id=u.site_id,
                        weight=u.weight,
                        envelope_sha256=u.envelope_sha256,
                        signer_fingerprint=u.signer_fingerprint,
                    )
                    for u in header.accepted
                ),
                rejected=tuple(Rejection(r.site_id, r.reason, r.detail) for r in header.rejected),
                payload=payload,
            )
        except CodecError as exc:
            raise FederationError(
                f"aggregation result does not parse ({type(exc).__name__}: {exc}); "
                "re-run the aggregation"
            ) from exc


@dataclass(frozen=True)
class _Verified:
    site_id: str
    sealed: SealedEnvelope
    header: EnvelopeHeader


def _header_problem(
    header: EnvelopeHeader, spec: RoundSpec, public: PublicFederation
) -> tuple[RejectionReason, str] | None:
    if header.round_id != spec.round_id:
        return (
            RejectionReason.WRONG_ROUND,
            f"update is for round {header.round_id!r}, aggregating {spec.round_id!r}",
        )
    if spec.opened_at is not None and header.created_at < spec.opened_at:
        return (
            RejectionReason.STALE,
            f"update created {header.created_at.isoformat()}, before the round opened",
        )
    if spec.deadline is not None and header.created_at > spec.deadline:
        return (
            RejectionReason.LATE,
            f"update created {header.created_at.isoformat()}, after the round's deadline",
        )
    if header.base_model_digest != spec.base_model_digest:
        return RejectionReason.WRONG_BASE_MODEL, "update is for another base model"
    if header.reference_digest != spec.reference_digest:
        return RejectionReason.WRONG_REFERENCE, "update starts from another reference adapter"
    if header.public_context_sha256 != public.digest:
        return RejectionReason.WRONG_CONTEXT, "update is encrypted under another federation key"
    if header.layout != spec.tensor_layout:
        return RejectionReason.LAYOUT_MISMATCH, "tensor names or shapes differ from the round's"
    if header.max_site_weight != spec.max_site_weight or not (
        0 < header.weight <= spec.max_site_weight
    ):
        return (
            RejectionReason.INVALID_WEIGHT,
            f"weight {header.weight} is not within (0, {spec.max_site_weight}]",
        )
    cap = spec.weight_cap(header.site_id)
    if cap is None or header.weight > cap:
        allowed = "no weight in this round" if cap is None else f"at most {cap}"
        return (
            RejectionReason.OVER_WEIGHT_CAP,
            f"weight {header.weight} declared; the site registry allows {allowed}",
        )
    if spec.clip_norm is not None and header.clip_norm != spec.clip_norm:
        return (
            RejectionReason.WRONG_CLIP_NORM,
            f"update clipped to {header.clip_norm}, the round requires {spec.clip_norm}",
        )
    return _dp_problem(header, spec)


def _dp_problem(header: EnvelopeHeader, spec: RoundSpec) -> tuple[RejectionReason, str] | None:
    """The site's DP report must match the round's DP rule: a site that reports no
    noise (or other noise) in a DP round breaks everybody's guarantee, and noise in a
    round without DP is not what the coordinator set. The report is all the aggregator
    can check: whether the noise was really drawn is not visible in a ciphertext."""
    report = header.dp
    if spec.dp is None:
        if report is None:
            return None
        return RejectionReason.WRONG_DP, "update reports DP noise; the round has no DP rule"
    required = (spec.round_id, spec.dp.noise_multiplier, spec.dp.delta)
    if report is None:
        return (
            RejectionReason.WRONG_DP,
            f"update reports no DP noise; the round requires noise multiplier "
            f"{spec.dp.noise_multiplier} at delta {spec.dp.delta}",
        )
    reported = (report.get("round_id"), report.get("noise_multiplier"), report.get("delta"))
    if reported != required:
        return (
            RejectionReason.WRONG_DP,
            f"update reports DP (round, noise multiplier, delta) {reported}; the round "
            f"requires {required}",
        )
    return None


def _screen(
    raw: bytes,
    keys: Mapping[str, CompositeVerifyKey],
    spec: RoundSpec,
    public: PublicFederation,
) -> _Verified | Rejection:
    """Steps 1-4 of the module docstring for one envelope."""
    site_id = UNREADABLE_SITE
    try:
        sealed = SealedEnvelope.from_bytes(raw)
        site_id = sealed.claimed_site_id()
    except EnvelopeError as exc:
        return Rejection(site_id, RejectionReason.MALFORMED, str(exc))
    key = keys.get(site_id)
    if key is None:
        return Rejection(site_id, RejectionReason.UNKNOWN_SITE, "site is not registered")
    try:
        header = sealed.verify(key)
    except EnvelopeError as exc:
        return Rejection(site_id, RejectionReason.BAD_SIGNATURE, str(exc))
    problem = _header_problem(header, spec, public)
    if problem is not None:
        return Rejection(site_id, *problem)
    return _Verified(site_id, sealed, header)


def _screen_all(
    envelopes: Sequence[bytes],
    keys: Mapping[str, CompositeVerifyKey],
    spec: RoundSpec,
    public: PublicFederation,
) -> list[_Verified | Rejection]:
    """:func:`_screen` every envelope, in order, on up to :data:`SCREEN_THREADS` threads.

    Most of the work is the SHA-256 of each payload, which ``hashlib`` computes without
    the GIL, so the envelopes are hashed in parallel on several cores.
    """
    workers = min(SCREEN_THREADS, len(envelopes))
    if workers <= 1:
        return [_screen(raw, keys, spec, public) for raw in envelopes]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tg-screen") as pool:
        return list(pool.map(lambda raw: _screen(raw, keys, spec, public), envelopes))


def _one_per_site(verified: Sequence[_Verified]) -> tuple[list[_Verified], list[Rejection]]:
    """Step 5: drop identical replays, exclude sites that signed conflicting updates."""
    by_site: dict[str, list[_Verified]] = {}
    for item in verified:
        by_site.setdefault(item.site_id, []).append(item)
    kept: list[_Verified] = []
    rejected: list[Rejection] = []
    for site_id in sorted(by_site):
        items = by_site[site_id]
        distinct = {item.sealed.digest for item in items}
        if len(distinct) > 1:
            rejected.extend(
                Rejection(
                    site_id,
                    RejectionReason.CONFLICTING_UPDATES,
                    f"site signed {len(distinct)} different updates for this round",
                )
                for _ in items
            )
            continue
        kept.append(items[0])
        rejected.extend(
            Rejection(site_id, RejectionReason.REPLAYED, "identical copy of an accepted update")
            for _ in items[1:]
        )
    return kept, rejected


def _sum_ciphertexts(
    unique: Sequence[_Verified],
    context: ts.Context,
    public: PublicFederation,
    spec: RoundSpec,
    rejected: list[Rejection],
) -> tuple[CiphertextSum, list[_Verified]]:
    """Step 6 and the sum: every update is checked completely (framing, each
    ciphertext's level, scale, coefficients, transparency) before it is added, so a bad
    update is refused and blamed on its sender and leaves the sum as it was."""
    total = CiphertextSum(context, public.params, spec.tensor_layout.numel, spec.ckks_packing)
    summed: list[_Verified] = []
    for item in unique:
        try:
            total.add(item.sealed.payload)
        except CiphertextError as exc:
            rejected.append(Rejection(item.site_id, RejectionReason.INVALID_CIPHERTEXT, str(exc)))
            continue
        summed.append(item)
    return total, summed


def aggregate_updates(
    envelopes: Sequence[bytes],
    registered_site_keys: Mapping[str, CompositeVerifyKey],
    spec: RoundSpec,
    public: PublicFederation,
    min_sites: int,
) -> AggregationResult:
    """Verify ``envelopes`` and return the encrypted weighted sum of the valid ones.

    Raises :class:`QuorumNotMetError` (with every rejection attached) if fewer than
    ``min_sites`` (or the round's own quorum, whichever is larger) updates survive,
    and :class:`ContextError` if ``public`` would let this process decrypt.
    """
    params = public.params
    if not 2 <= min_sites <= params.max_sites:
        raise FederationError(
            f"min_sites={min_sites} must be between 2 and max_sites={params.max_sites}: "
            "an aggregate of one site would reveal that site's update to the custodian"
        )
    min_sites = max(min_sites, spec.min_sites)
    context = public.load_context()
    if context.is_private() or context.has_secret_key():
        raise ContextError("the aggregator must not hold the federation secret key")

    rejected: list[Rejection] = []
    verified: list[_Verified] = []
    for outcome in _screen_all(envelopes, registered_site_keys, spec, public):
        if isinstance(outcome, Rejection):
            rejected.append(outcome)
        else:
            verified.append(outcome)
    unique, duplicates = _one_per_site(verified)
    rejected.extend(duplicates)

    total, summed = _sum_ciphertexts(unique, context, public, spec, rejected)
    rejection_pairs = tuple((r.site_id, r.reason.value) for r in rejected)
    if len(summed) < min_sites or total.count == 0:
        summary = ", ".join(f"{site}: {reason}" for site, reason in rejection_pairs) or "none"
        raise QuorumNotMetError(
            f"round {spec.round_id!r}: only {len(summed)} valid site updates, quorum is "
            f"{min_sites}; rejected: {summary}. Wait for more sites or fix the rejected "
            "updates, then re-run the aggregation",
            rejection_pairs,
        )
    if len(summed) > params.max_sites:
        raise FederationError(
            f"{len(summed)} valid updates exceed the ceremony's max_sites={params.max_sites}; "
            "their sum could overflow the CKKS modulus. Re-run the ceremony with a larger "
            "max_sites"
        )

    accepted = tuple(
        AcceptedUpdate(
            site_id=item.site_id,
            weight=item.header.weight,
            envelope_sha256=item.sealed.digest,
            signer_fingerprint=item.header.signer_fingerprint,
        )
        for item in summed
    )
    return AggregationResult(
        spec=spec,
        public_context_sha256=public.digest,
        accepted=accepted,
        rejected=tuple(rejected),
        payload=total.to_bytes(),
    )
