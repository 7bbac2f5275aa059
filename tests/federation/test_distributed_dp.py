"""Distributed DP: the round's rule, each site's noise share, and what the ledger charges."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch

from tensorguard.federation._accountant import gaussian_epsilon
from tensorguard.federation._aggregation import aggregate_updates
from tensorguard.federation._envelope import EnvelopeHeader, SealedEnvelope, seal_envelope
from tensorguard.federation._errors import PrivacyAccountingError, PrivacyBudgetExceededError
from tensorguard.federation._layout import FloatVector
from tensorguard.federation._packing import decrypt_vector, load_encrypted_vector
from tensorguard.federation._privacy import DPRule, PrivacyLedger, add_gaussian_noise
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import SiteUpdateConfig, clip_l2, update_delta
from tests.federation.conftest import BASE_DIGEST, MAX_SITE_WEIGHT, Federation

CLIP = 0.5
RULE = DPRule(noise_multiplier=1.5, delta=1e-5, epsilon_budget=50.0)


def _dp_spec(
    fed: Federation, min_sites: int, round_id: str = "round-dp", rule: DPRule | None = RULE
) -> RoundSpec:
    return RoundSpec.from_reference(
        round_id,
        BASE_DIGEST,
        fed.reference,
        MAX_SITE_WEIGHT,
        min_sites=min_sites,
        clip_norm=CLIP,
        dp=rule,
    )


def _ledgers(sites: Sequence[str], rule: DPRule = RULE) -> dict[str, PrivacyLedger]:
    return {site: PrivacyLedger.for_site(site, rule) for site in sites}


@pytest.mark.parametrize("sites", [2, 5, 10])
def test_summed_site_noise_has_the_central_scale(sites: int) -> None:
    """k draws of N(0, (σC/√k)²) sum to N(0, (σC)²); numpy only, many coordinates."""
    std = RULE.site_noise_std(CLIP, sites)
    assert std == pytest.approx(RULE.noise_multiplier * CLIP / math.sqrt(sites))
    zeros: FloatVector = np.zeros(200_000)
    summed = sum(add_gaussian_noise(zeros, std) for _ in range(sites))
    assert float(np.std(summed)) == pytest.approx(RULE.noise_multiplier * CLIP, rel=0.015)
    assert abs(float(np.mean(summed))) < 0.01


def test_decrypted_sum_of_the_quorum_carries_the_central_noise(fed: Federation) -> None:
    """End to end through CKKS: the aggregate of k DP sites minus the clipped deltas."""
    sites = ["site-00", "site-01", "site-02", "site-03"]
    spec = _dp_spec(fed, min_sites=len(sites))
    ledgers = _ledgers(sites)
    config = SiteUpdateConfig(clip_norm=CLIP, dp=RULE)
    updates = [
        fed.update(site, spec, weight=MAX_SITE_WEIGHT, config=config, ledger=ledgers[site])
        for site in sites
    ]
    envelopes = [update.envelope for update in updates]
    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, min_sites=len(sites))
    mean = fed.decrypt(result, envelopes, dtype=torch.float64)
    summed = spec.tensor_layout.flatten(mean) * len(sites)  # weights all equal max
    clean = sum(
        clip_l2(update_delta(fed.trained(site), fed.reference, spec), CLIP) for site in sites
    )
    noise = summed - clean
    # 1344 coordinates: the std estimate has a relative standard error of ~2 %.
    assert float(np.std(noise)) == pytest.approx(RULE.noise_multiplier * CLIP, rel=0.08)

    expected_round = gaussian_epsilon(RULE.noise_multiplier, 1.0, 1, RULE.delta)
    for site, update in zip(sites, updates, strict=True):
        assert update.privacy is not None
        assert update.privacy.epsilon_round == pytest.approx(expected_round)
        assert update.header.dp == update.privacy.to_json()
        metadata = update.metadata()
        assert metadata["dp_epsilon_round"] == pytest.approx(expected_round)
        assert metadata["dp_epsilon_total"] == pytest.approx(ledgers[site].epsilon())
        assert metadata["dp_site_noise_std"] == pytest.approx(
            RULE.noise_multiplier * CLIP / math.sqrt(len(sites))
        )
        assert len(ledgers[site].charges) == 1


def test_a_light_site_still_adds_its_full_noise_share(fed: Federation) -> None:
    """Noise is added after weighting: a small weight must not shrink the site's noise,
    or a heavy site's contribution would stand out of a sum with too little noise."""
    spec = _dp_spec(fed, min_sites=2)
    weight = MAX_SITE_WEIGHT / 20
    ledger = PrivacyLedger.for_site("site-04", RULE)
    config = SiteUpdateConfig(clip_norm=CLIP, dp=RULE)
    update = fed.update("site-04", spec, weight=weight, config=config, ledger=ledger)
    # Read it the way only a colluding custodian could: decrypt the envelope alone.
    payload = SealedEnvelope.from_bytes(update.envelope).payload
    vector = load_encrypted_vector(
        payload, fed.secret.context, fed.public.params, spec.tensor_layout.numel
    )
    decrypted = decrypt_vector(vector, fed.secret.context)
    clean = clip_l2(update_delta(fed.trained("site-04"), fed.reference, spec), CLIP)
    noise = decrypted - clean * (weight / MAX_SITE_WEIGHT)
    assert float(np.std(noise)) == pytest.approx(RULE.site_noise_std(CLIP, 2), rel=0.08)


@pytest.mark.parametrize(
    ("site_rule", "spec_rule"),
    [
        (None, RULE),
        (RULE, None),
        (DPRule(noise_multiplier=0.5, delta=1e-5, epsilon_budget=50.0), RULE),
        (DPRule(noise_multiplier=1.5, delta=1e-6, epsilon_budget=50.0), RULE),
    ],
)
def test_a_site_config_that_differs_from_the_round_rule_is_refused(
    site_rule: DPRule | None, spec_rule: DPRule | None, fed: Federation
) -> None:
    spec = _dp_spec(fed, min_sites=2, rule=spec_rule)
    ledger = PrivacyLedger.for_site("site-05", site_rule or RULE)
    config = SiteUpdateConfig(clip_norm=CLIP, dp=site_rule)
    with pytest.raises(PrivacyAccountingError, match="use the round spec's DP rule"):
        fed.update("site-05", spec, config=config, ledger=ledger)
    assert ledger.charges == []


def test_ledger_is_required_and_must_be_the_sites(fed: Federation) -> None:
    spec = _dp_spec(fed, min_sites=2)
    config = SiteUpdateConfig(clip_norm=CLIP, dp=RULE)
    with pytest.raises(PrivacyAccountingError, match="no privacy ledger"):
        fed.update("site-06", spec, config=config)
    with pytest.raises(PrivacyAccountingError, match="belongs to"):
        fed.update("site-06", spec, config=config, ledger=PrivacyLedger.for_site("site-07", RULE))
    other_budget = PrivacyLedger("site-06", RULE.delta, 2 * RULE.epsilon_budget)
    with pytest.raises(PrivacyAccountingError, match="cannot change silently"):
        fed.update("site-06", spec, config=config, ledger=other_budget)


def test_budget_is_checked_before_anything_is_released(fed: Federation) -> None:
    rule = DPRule(noise_multiplier=1.0, delta=1e-5, epsilon_budget=6.0)
    ledger = PrivacyLedger.for_site("site-08", rule)
    config = SiteUpdateConfig(clip_norm=CLIP, dp=rule)
    fed.update("site-08", _dp_spec(fed, 2, "round-a", rule), config=config, ledger=ledger)
    spent = ledger.epsilon()
    assert spent == pytest.approx(gaussian_epsilon(1.0, 1.0, 1, 1e-5))
    with pytest.raises(PrivacyBudgetExceededError, match="above the budget of 6"):
        fed.update("site-08", _dp_spec(fed, 2, "round-b", rule), config=config, ledger=ledger)
    assert ledger.epsilon() == spent
    assert len(ledger.charges) == 1


def test_round_spec_dp_rule_needs_a_clip_norm_and_old_specs_parse(fed: Federation) -> None:
    with pytest.raises(ValueError, match="needs the round's clip_norm"):
        RoundSpec.from_reference("r", BASE_DIGEST, fed.reference, MAX_SITE_WEIGHT, dp=RULE)
    spec = _dp_spec(fed, min_sites=3)
    assert RoundSpec.model_validate_json(spec.model_dump_json()) == spec
    old = json.loads(fed.spec().model_dump_json())
    del old["dp"]
    assert RoundSpec.model_validate(old).dp is None


@pytest.mark.parametrize(
    ("dp_report", "detail"),
    [
        (None, "reports no DP noise"),
        ({"noise_multiplier": 0.1}, "requires"),
        ({"round_id": "another-round"}, "requires"),
    ],
)
def test_a_keyed_site_misreporting_its_dp_noise_is_rejected(
    dp_report: dict[str, object] | None, detail: str, fed: Federation
) -> None:
    """A registered site re-signs its DP envelope claiming no noise, or less: the
    aggregator compares the report with the round's rule and leaves it out."""
    sites = ["site-00", "site-01", "site-02"]
    spec = _dp_spec(fed, min_sites=2, round_id="round-dp-report")
    ledgers = _ledgers(sites)
    config = SiteUpdateConfig(clip_norm=CLIP, dp=RULE)
    envelopes = [
        fed.update(site, spec, config=config, ledger=ledgers[site]).envelope for site in sites
    ]
    sealed = SealedEnvelope.from_bytes(envelopes[2])
    header = EnvelopeHeader.from_bytes(sealed.header_bytes)
    assert header.dp is not None
    claimed = None if dp_report is None else {**header.dp, **dp_report}
    forged = seal_envelope(
        dataclasses.replace(header, dp=claimed), sealed.payload, fed.site_keys["site-02"]
    )
    result = aggregate_updates(
        [*envelopes[:2], forged], fed.registered, spec, fed.public, min_sites=2
    )
    assert [u.site_id for u in result.accepted] == sites[:2]
    assert result.rejections == [("site-02", "wrong_dp")]
    [rejection] = result.rejected
    assert detail in rejection.detail


def test_a_dp_report_in_a_round_without_dp_is_rejected(fed: Federation) -> None:
    spec = _dp_spec(fed, min_sites=2, round_id="round-no-dp", rule=None)
    config = SiteUpdateConfig(clip_norm=CLIP)
    sites = ("site-00", "site-01", "site-02")
    envelopes = [fed.update(site, spec, config=config).envelope for site in sites]
    sealed = SealedEnvelope.from_bytes(envelopes[1])
    header = EnvelopeHeader.from_bytes(sealed.header_bytes)
    claimed = {"round_id": spec.round_id, "noise_multiplier": 1.0, "delta": 1e-5}
    forged = seal_envelope(
        dataclasses.replace(header, dp=claimed), sealed.payload, fed.site_keys["site-01"]
    )
    result = aggregate_updates(
        [envelopes[0], forged, envelopes[2]], fed.registered, spec, fed.public, min_sites=2
    )
    assert result.rejections == [("site-01", "wrong_dp")]
