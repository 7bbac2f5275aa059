"""End to end: site updates, verification, quorum, homomorphic sum, custodian decrypt."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tenseal as ts
import torch

from tensorguard.crypto._composite import CompositeSigningKey, CompositeVerifyKey
from tensorguard.federation._aggregation import (
    AggregationResult,
    RejectionReason,
    aggregate_updates,
)
from tensorguard.federation._context import PublicFederation
from tensorguard.federation._custodian import apply_update, envelope_digest
from tensorguard.federation._envelope import (
    SIGNATURE_CONTEXT,
    EnvelopeHeader,
    SealedEnvelope,
    seal_envelope,
)
from tensorguard.federation._errors import (
    ContextError,
    DecryptionError,
    FederationError,
    QuorumNotMetError,
)
from tensorguard.federation._layout import TensorLayout, TensorSpec
from tensorguard.federation._packing import (
    EncryptedVector,
    Packing,
    chunk_sizes,
    decrypt_vector,
    load_encrypted_vector,
)
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import clip_l2
from tests.federation.conftest import Federation, site_weight


def _sites(count: int) -> list[str]:
    return [f"site-{index:02d}" for index in range(count)]


def _envelopes(fed: Federation, spec: RoundSpec, sites: Sequence[str]) -> list[bytes]:
    return [fed.update(site_id, spec).envelope for site_id in sites]


def _plain_fedavg(fed: Federation, sites: Sequence[str]) -> np.ndarray:
    layout = TensorLayout.from_tensors(fed.reference)
    total = np.zeros(layout.numel)
    for site_id in sites:
        delta = layout.flatten(fed.trained(site_id)) - layout.flatten(fed.reference)
        total += site_weight(site_id) * clip_l2(delta, 1e6)
    return total / sum(site_weight(site_id) for site_id in sites)


def _fedavg_error(
    fed: Federation,
    result: AggregationResult,
    sites: Sequence[str],
    envelopes: Sequence[bytes],
    registered: Mapping[str, CompositeVerifyKey] | None = None,
) -> float:
    accepted = {update.envelope_sha256 for update in result.accepted}
    delivered = [raw for raw in envelopes if envelope_digest(raw) in accepted]
    decrypted = fed.decrypt(result, delivered, dtype=torch.float64, registered=registered)
    flat = TensorLayout.from_tensors(fed.reference).flatten(decrypted)
    expected = _plain_fedavg(fed, sites)
    return float(np.linalg.norm(flat - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize(
    ("site_count", "packing"),
    [(3, Packing.COMPLEX), (10, Packing.COMPLEX), (3, Packing.REAL)],
)
def test_decrypted_aggregate_equals_plaintext_fedavg(
    site_count: int, packing: Packing, fed: Federation
) -> None:
    spec = fed.spec(packing=packing)
    sites = _sites(site_count)
    envelopes = _envelopes(fed, spec, sites)
    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, min_sites=site_count)
    assert [u.site_id for u in result.accepted] == sites
    assert result.rejected == ()
    per_ciphertext = packing.values_per_ciphertext(fed.public.params)
    assert SealedEnvelope.from_bytes(envelopes[0]).payload[4] == packing.wire_version
    assert EnvelopeHeader.from_bytes(
        SealedEnvelope.from_bytes(envelopes[0]).header_bytes
    ).ciphertext_count == -(-spec.tensor_layout.numel // per_ciphertext)

    restored = AggregationResult.from_bytes(result.to_bytes())
    assert restored == result
    assert _fedavg_error(fed, restored, sites, envelopes) <= 1e-6

    mean_delta = fed.decrypt(restored, envelopes)
    updated = apply_update(fed.reference, mean_delta)
    for name, tensor in fed.reference.items():
        assert torch.allclose(updated[name], tensor + mean_delta[name], atol=1e-7)


def test_dropouts_down_to_quorum_then_below(fed: Federation) -> None:
    spec = fed.spec()
    envelopes = dict(zip(_sites(6), _envelopes(fed, spec, _sites(6)), strict=True))
    present = ["site-01", "site-02", "site-04", "site-05"]
    result = aggregate_updates(
        [envelopes[s] for s in present], fed.registered, spec, fed.public, min_sites=4
    )
    assert [u.site_id for u in result.accepted] == present
    assert result.total_weight == sum(site_weight(s) for s in present)
    assert _fedavg_error(fed, result, present, [envelopes[s] for s in present]) <= 1e-6

    with pytest.raises(QuorumNotMetError, match="only 3 valid site updates, quorum is 4"):
        aggregate_updates(
            [envelopes[s] for s in present[:3]], fed.registered, spec, fed.public, min_sites=4
        )


def test_rejected_updates_are_reported_and_the_rest_aggregate(fed: Federation) -> None:
    spec = fed.spec("round-0002")
    good_sites = ["site-00", "site-01", "site-02"]
    good = _envelopes(fed, spec, good_sites)

    tampered_payload = bytearray(fed.update("site-03", spec).envelope)
    tampered_payload[-100] ^= 0x01
    sealed = SealedEnvelope.from_bytes(fed.update("site-04", spec).envelope)
    tampered_header = SealedEnvelope(
        sealed.header_bytes.replace(b'"weight":', b'"weight":1', 1),
        sealed.signature,
        sealed.payload,
    ).to_bytes()
    signed = SealedEnvelope.from_bytes(fed.update("site-05", spec).envelope)
    unsigned = SealedEnvelope(signed.header_bytes, b"", signed.payload).to_bytes()
    previous_round = fed.update("site-06", fed.spec("round-0001")).envelope
    wrong_base = fed.update("site-07", fed.spec("round-0002", "c" * 64)).envelope
    honest = SealedEnvelope.from_bytes(fed.update("site-08", spec).envelope)
    forged = SealedEnvelope(
        honest.header_bytes,
        CompositeSigningKey.generate().sign(honest.header_bytes, SIGNATURE_CONTEXT),
        honest.payload,
    ).to_bytes()
    unknown = fed.update("site-11", spec).envelope  # properly signed, not registered below
    conflicting = [fed.update("site-09", spec).envelope for _ in range(2)]

    envelopes = [
        *good,
        bytes(tampered_payload),
        tampered_header,
        unsigned,
        previous_round,
        wrong_base,
        forged,
        unknown,
        good[1],  # a replayed copy of an accepted update
        *conflicting,  # site-09 signed two different updates for the round
        b"not an envelope",
    ]
    keys = {k: v for k, v in fed.registered.items() if k != "site-11"}
    result = aggregate_updates(envelopes, keys, spec, fed.public, min_sites=3)

    assert [u.site_id for u in result.accepted] == good_sites
    assert sorted(result.rejections) == sorted(
        [
            ("site-03", RejectionReason.BAD_SIGNATURE.value),
            ("site-04", RejectionReason.BAD_SIGNATURE.value),
            ("site-05", RejectionReason.BAD_SIGNATURE.value),
            ("site-06", RejectionReason.WRONG_ROUND.value),
            ("site-07", RejectionReason.WRONG_BASE_MODEL.value),
            ("site-08", RejectionReason.BAD_SIGNATURE.value),
            ("site-11", RejectionReason.UNKNOWN_SITE.value),
            ("site-01", RejectionReason.REPLAYED.value),
            ("site-09", RejectionReason.CONFLICTING_UPDATES.value),
            ("site-09", RejectionReason.CONFLICTING_UPDATES.value),
            ("<unreadable>", RejectionReason.MALFORMED.value),
        ]
    )
    assert "unsigned" in next(r.detail for r in result.rejected if r.site_id == "site-05")
    assert _fedavg_error(fed, result, good_sites, envelopes, keys) <= 1e-6


def test_stale_updates_are_rejected(fed: Federation) -> None:
    early = fed.spec("round-0003")
    stale = fed.update("site-00", early).envelope
    time.sleep(0.01)
    opened = early.model_copy(update={"opened_at": datetime.now(UTC)})
    fresh = _envelopes(fed, opened, ["site-01", "site-02"])
    result = aggregate_updates([stale, *fresh], fed.registered, opened, fed.public, min_sites=2)
    assert [u.site_id for u in result.accepted] == ["site-01", "site-02"]
    assert result.rejections == [("site-00", "stale")]


def _resigned(envelope: bytes, key: CompositeSigningKey, **changes: Any) -> bytes:
    """A registered site signing a header it altered (a misbehaving but keyed site)."""
    sealed = SealedEnvelope.from_bytes(envelope)
    header = dataclasses.replace(EnvelopeHeader.from_bytes(sealed.header_bytes), **changes)
    return seal_envelope(header, sealed.payload, key)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"layout": TensorLayout((TensorSpec("x.lora_A.weight", (4, 4)),))}, "layout_mismatch"),
        ({"weight": 5001.0}, "invalid_weight"),
        ({"max_site_weight": 1e9}, "invalid_weight"),
        ({"public_context_sha256": "0" * 64}, "wrong_context"),
        ({"reference_digest": "0" * 64}, "wrong_reference"),
    ],
)
def test_a_registered_site_signing_inconsistent_fields_is_rejected(
    changes: dict[str, Any], reason: str, fed: Federation
) -> None:
    spec = fed.spec("round-0004")
    good = _envelopes(fed, spec, ["site-00", "site-01"])
    bad = _resigned(fed.update("site-02", spec).envelope, fed.site_keys["site-02"], **changes)
    result = aggregate_updates([*good, bad], fed.registered, spec, fed.public, min_sites=2)
    assert [u.site_id for u in result.accepted] == ["site-00", "site-01"]
    assert result.rejections == [("site-02", reason)]


def test_a_signed_but_invalid_ciphertext_is_rejected(fed: Federation) -> None:
    spec = fed.spec("round-0005")
    good = _envelopes(fed, spec, ["site-00", "site-01"])
    sealed = SealedEnvelope.from_bytes(fed.update("site-02", spec).envelope)
    garbage = bytes(sealed.payload[:-64]) + bytes(64)
    header = dataclasses.replace(
        EnvelopeHeader.from_bytes(sealed.header_bytes),
        payload_sha256=hashlib.sha256(garbage).hexdigest(),
    )
    bad = seal_envelope(header, garbage, fed.site_keys["site-02"])
    result = aggregate_updates([*good, bad], fed.registered, spec, fed.public, min_sites=2)
    assert [u.site_id for u in result.accepted] == ["site-00", "site-01"]
    assert result.rejections == [("site-02", "invalid_ciphertext")]


def _rescaled_envelope(fed: Federation, site_id: str, spec: RoundSpec) -> bytes:
    """A correctly signed update whose ciphertexts use another CKKS scale."""
    update = fed.update(site_id, spec)
    context = fed.public.load_context()
    size = spec.tensor_layout.numel
    values = np.full(size, 1e-3)
    # complex-packed chunks (one CKKSVector per chunk, sized in slots) at scale 2^40
    chunks = [
        ts.ckks_vector(context, values[:slots].tolist(), 2.0**40)
        for slots in chunk_sizes(size, fed.public.params, spec.ckks_packing)
    ]
    payload = EncryptedVector(tuple(chunks), size, spec.ckks_packing).to_bytes()
    header = dataclasses.replace(
        update.header,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        payload_bytes=len(payload),
    )
    return seal_envelope(header, payload, fed.site_keys[site_id])


def test_mismatched_ciphertexts_are_blamed_on_their_sender_wherever_they_come(
    fed: Federation,
) -> None:
    spec = fed.spec("round-0006")
    envelopes = [
        _rescaled_envelope(fed, "site-00", spec),  # first: caught by full inspection
        *_envelopes(fed, spec, ["site-01", "site-02"]),
        _rescaled_envelope(fed, "site-03", spec),  # later: SEAL refuses to add it
    ]
    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, min_sites=2)
    assert [u.site_id for u in result.accepted] == ["site-01", "site-02"]
    assert result.rejections == [
        ("site-00", "invalid_ciphertext"),
        ("site-03", "invalid_ciphertext"),
    ]
    assert _fedavg_error(fed, result, ["site-01", "site-02"], envelopes) <= 1e-6


def test_aggregator_and_sites_cannot_decrypt(fed: Federation) -> None:
    spec = fed.spec()
    envelopes = _envelopes(fed, spec, _sites(2))
    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, min_sites=2)
    aggregator_context = fed.public.load_context()
    assert not aggregator_context.is_private()
    assert not aggregator_context.has_secret_key()
    summed = load_encrypted_vector(
        result.payload, aggregator_context, fed.public.params, spec.tensor_layout.numel
    )
    with pytest.raises(ContextError):
        decrypt_vector(summed, aggregator_context)
    with pytest.raises(ValueError, match="secret_key"):
        summed.chunks[0].decrypt()

    # site-01 holds the same public context; site-00's update stays opaque to it
    site_context = ts.context_from(fed.public.context_bytes)
    other_site_update = load_encrypted_vector(
        SealedEnvelope.from_bytes(envelopes[0]).payload,
        site_context,
        fed.public.params,
        spec.tensor_layout.numel,
    )
    with pytest.raises(ValueError, match="secret_key"):
        other_site_update.chunks[0].decrypt()


def test_aggregator_refuses_a_secret_key_and_single_site_quorum(fed: Federation) -> None:
    with pytest.raises(FederationError, match="min_sites"):
        aggregate_updates([], fed.registered, fed.spec(), fed.public, min_sites=1)
    with pytest.raises(ContextError):
        PublicFederation(fed.public.params, fed.secret.context.serialize(save_secret_key=True))


def test_custodian_refuses_a_foreign_or_single_site_aggregate(
    fed: Federation, tmp_path: Path
) -> None:
    spec = fed.spec()
    envelopes = _envelopes(fed, spec, _sites(2))
    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, min_sites=2)
    custodian = fed.custodian(tmp_path / "ledger.jsonl")
    single = dataclasses.replace(result, accepted=result.accepted[:1])
    with pytest.raises(DecryptionError, match="individual site"):
        custodian.decrypt(single, envelopes)
    foreign = dataclasses.replace(result, public_context_sha256="0" * 64)
    with pytest.raises(DecryptionError, match="another federation key"):
        custodian.decrypt(foreign, envelopes)
