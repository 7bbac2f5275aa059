"""The round's rules are the coordinator's, not the sites': attacks by keyed sites.

Each test plays a registered site that signs an envelope breaking one rule of the
signed round spec (declared weight above its registry cap, a foreign clip norm, an
update made before the round opened or after its deadline) and checks that the
aggregator leaves it out with the rule named, while honest sites still aggregate.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from tensorguard.codec import canonical_json
from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.federation._aggregation import aggregate_updates
from tensorguard.federation._envelope import EnvelopeHeader, SealedEnvelope, seal_envelope
from tensorguard.federation._errors import FederationError, QuorumNotMetError
from tensorguard.federation._packing import Packing
from tensorguard.federation._round_spec import (
    ROUND_SPEC_FORMAT,
    ROUND_SPEC_SIGNATURE_CONTEXT,
    RoundSpec,
    load_signed_round_spec,
    sign_round_spec,
)
from tensorguard.federation._site_update import SiteUpdateConfig
from tests.federation.conftest import MAX_SITE_WEIGHT, Federation, site_weight

CLIP = 1e6
HONEST = ("site-00", "site-01", "site-02")


def _ruled_spec(fed: Federation, round_id: str, **rules: Any) -> RoundSpec:
    caps = {site_id: site_weight(site_id) for site_id in HONEST}
    defaults: dict[str, Any] = {
        "opened_at": datetime.now(UTC) - timedelta(minutes=1),
        "deadline": datetime.now(UTC) + timedelta(hours=1),
        "clip_norm": CLIP,
        "site_weight_caps": caps,
    }
    defaults.update(rules)
    return RoundSpec.from_reference(round_id, "b" * 64, fed.reference, MAX_SITE_WEIGHT, **defaults)


def _signed_with(envelope: bytes, key: CompositeSigningKey, **changes: Any) -> bytes:
    sealed = SealedEnvelope.from_bytes(envelope)
    header = dataclasses.replace(EnvelopeHeader.from_bytes(sealed.header_bytes), **changes)
    return seal_envelope(header, sealed.payload, key)


def _honest(fed: Federation, spec: RoundSpec, sites: tuple[str, ...]) -> list[bytes]:
    config = SiteUpdateConfig(clip_norm=CLIP)
    return [fed.update(site_id, spec, config=config).envelope for site_id in sites]


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        # site-02's registry cap is 2200; it claims the round's global maximum instead.
        ({"weight": MAX_SITE_WEIGHT}, "over_weight_cap"),
        ({"weight": site_weight("site-02") + 1}, "over_weight_cap"),
        ({"clip_norm": 1e9}, "wrong_clip_norm"),
        ({"created_at": datetime.now(UTC) - timedelta(days=1)}, "stale"),
        ({"created_at": datetime.now(UTC) + timedelta(days=1)}, "late"),
    ],
)
def test_a_keyed_site_breaking_a_round_rule_is_rejected_with_the_rule_named(
    changes: dict[str, Any], reason: str, fed: Federation
) -> None:
    spec = _ruled_spec(fed, "rules-0001")
    good = _honest(fed, spec, ("site-00", "site-01"))
    honest_bad = _honest(fed, spec, ("site-02",))[0]
    bad = _signed_with(honest_bad, fed.site_keys["site-02"], **changes)
    result = aggregate_updates([*good, bad], fed.registered, spec, fed.public, min_sites=2)
    assert [u.site_id for u in result.accepted] == ["site-00", "site-01"]
    assert result.rejections == [("site-02", reason)]


def test_a_registered_site_without_a_cap_in_this_round_cannot_contribute(
    fed: Federation,
) -> None:
    spec = _ruled_spec(fed, "rules-0002")
    wider = RoundSpec.from_reference(
        "rules-0002", "b" * 64, fed.reference, MAX_SITE_WEIGHT, clip_norm=CLIP
    )
    outsider = fed.update("site-05", wider, config=SiteUpdateConfig(clip_norm=CLIP)).envelope
    good = _honest(fed, spec, HONEST)
    result = aggregate_updates([*good, outsider], fed.registered, spec, fed.public, min_sites=2)
    assert [u.site_id for u in result.accepted] == list(HONEST)
    assert result.rejections == [("site-05", "over_weight_cap")]


def test_the_round_quorum_overrides_a_lower_aggregator_setting(fed: Federation) -> None:
    spec = _ruled_spec(fed, "rules-0003", min_sites=3)
    good = _honest(fed, spec, ("site-00", "site-01"))
    with pytest.raises(QuorumNotMetError, match="quorum is 3"):
        aggregate_updates(good, fed.registered, spec, fed.public, min_sites=2)


def test_honest_sites_refuse_to_build_updates_the_round_would_reject(fed: Federation) -> None:
    spec = _ruled_spec(fed, "rules-0004")
    with pytest.raises(FederationError, match="at most 2200"):
        fed.update("site-02", spec, weight=2201.0, config=SiteUpdateConfig(clip_norm=CLIP))
    with pytest.raises(FederationError, match="requires clip_norm"):
        fed.update("site-02", spec, config=SiteUpdateConfig(clip_norm=5.0))


@pytest.mark.parametrize(
    "rules",
    [
        {"deadline": datetime.now(UTC) - timedelta(hours=2)},  # before opened_at
        {"site_weight_caps": {"site-00": MAX_SITE_WEIGHT + 1}},
        {"site_weight_caps": {"site-00": 1.0}, "min_sites": 2},
        {"clip_norm": float("inf")},
    ],
)
def test_inconsistent_round_rules_are_refused(rules: dict[str, Any], fed: Federation) -> None:
    with pytest.raises(ValidationError):
        _ruled_spec(fed, "rules-0005", **rules)


def test_the_signed_round_spec_pins_the_rules_to_the_coordinator(fed: Federation) -> None:
    coordinator = CompositeSigningKey.generate()
    spec = _ruled_spec(fed, "rules-0006")
    signed = sign_round_spec(spec, coordinator)
    assert load_signed_round_spec(signed, coordinator.public_key()) == spec

    document = json.loads(signed)
    document["spec"]["site_weight_caps"][0][1] = MAX_SITE_WEIGHT  # a site raises its cap
    with pytest.raises(FederationError, match="does not verify"):
        load_signed_round_spec(json.dumps(document).encode(), coordinator.public_key())
    impostor = CompositeSigningKey.generate()
    with pytest.raises(FederationError, match="another key"):
        load_signed_round_spec(sign_round_spec(spec, impostor), coordinator.public_key())


def test_a_signed_spec_from_before_complex_packing_still_reads_as_real(fed: Federation) -> None:
    """A spec signed before the packing field existed means one value per slot, the only
    packing sites used then; its round aggregates and decrypts, and a complex-packed
    update in it is refused with both packings named."""
    coordinator = CompositeSigningKey.generate()
    spec = _ruled_spec(fed, "rules-0007", ckks_packing=Packing.REAL)
    body = spec.model_dump(mode="json")
    del body["ckks_packing"]
    old_document = canonical_json(
        {
            "format": ROUND_SPEC_FORMAT,
            "spec": body,
            "signer_fingerprint": coordinator.public_key().fingerprint(),
            "signature": coordinator.sign(canonical_json(body), ROUND_SPEC_SIGNATURE_CONTEXT).hex(),
        }
    )
    loaded = load_signed_round_spec(old_document, coordinator.public_key())
    assert loaded == spec
    assert loaded.ckks_packing is Packing.REAL

    envelopes = _honest(fed, loaded, HONEST)
    assert {SealedEnvelope.from_bytes(raw).payload[4] for raw in envelopes} == {1}
    complex_packed = _honest(fed, spec.model_copy(update={"ckks_packing": Packing.COMPLEX}), HONEST)
    result = aggregate_updates(
        [*envelopes[:2], complex_packed[2]], fed.registered, loaded, fed.public, 2
    )
    assert result.rejections == [("site-02", "invalid_ciphertext")]
    assert "complex-packed" in result.rejected[0].detail
    mean = fed.decrypt(result, envelopes[:2])
    assert set(mean) == set(loaded.tensor_layout.names)
