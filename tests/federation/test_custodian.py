"""The custodian as an attacker would meet it: it decrypts only a verified aggregate,
once per round, and withholds a mean update longer than the round's clip norm."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.federation._accountant import gaussian_epsilon
from tensorguard.federation._aggregation import AggregationResult, aggregate_updates
from tensorguard.federation._custodian import (
    AggregateMismatchError,
    AggregateNormError,
    Custodian,
)
from tensorguard.federation._custodian_ledger import CustodianLedger, LedgerError
from tensorguard.federation._envelope import EnvelopeHeader, SealedEnvelope, seal_envelope
from tensorguard.federation._errors import DecryptionError
from tensorguard.federation._packing import encrypt_vector, load_encrypted_vector
from tensorguard.federation._privacy import DPRule, PrivacyLedger
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import SiteUpdateConfig, build_site_update
from tests.federation.conftest import CUSTODIAN_KEY, MAX_SITE_WEIGHT, Federation

SITES = ("site-00", "site-01", "site-02")
CLIP = 0.5


def _spec(fed: Federation, round_id: str) -> RoundSpec:
    return RoundSpec.from_reference(
        round_id, "b" * 64, fed.reference, MAX_SITE_WEIGHT, clip_norm=CLIP
    )


def _round(
    fed: Federation, round_id: str, sites: tuple[str, ...] = SITES
) -> tuple[AggregationResult, list[bytes]]:
    spec = _spec(fed, round_id)
    config = SiteUpdateConfig(clip_norm=CLIP)
    envelopes = [fed.update(site, spec, config=config).envelope for site in sites]
    return aggregate_updates(envelopes, fed.registered, spec, fed.public, 2), envelopes


def test_an_honest_aggregate_decrypts_once_and_the_ledger_records_it(
    fed: Federation, tmp_path: Path
) -> None:
    result, envelopes = _round(fed, "cust-0001")
    custodian = fed.custodian(tmp_path / "ledger.jsonl")
    first = custodian.decrypt(result, envelopes)
    assert first.record.contributors == SITES
    assert first.norm_bound == CLIP
    assert 0 < first.l2_norm <= CLIP
    again = custodian.decrypt(result, envelopes)  # the same aggregate: nothing new learnt
    assert again.record == first.record
    assert len(CustodianLedger(tmp_path / "ledger.jsonl", CUSTODIAN_KEY).records()) == 1


def test_a_second_aggregate_of_the_same_round_is_refused(fed: Federation, tmp_path: Path) -> None:
    """Decrypting {a,b,c} and then {a,b} would reveal c by subtraction."""
    result, envelopes = _round(fed, "cust-0002")
    custodian = fed.custodian(tmp_path / "ledger.jsonl")
    custodian.decrypt(result, envelopes)
    fewer = aggregate_updates(envelopes[:2], fed.registered, result.spec, fed.public, 2)
    with pytest.raises(LedgerError, match="already decrypted once"):
        custodian.decrypt(fewer, envelopes[:2])


def test_a_hand_written_aggregate_holding_one_sites_ciphertext_is_refused(
    fed: Federation, tmp_path: Path
) -> None:
    result, envelopes = _round(fed, "cust-0003")
    one_site = bytes(SealedEnvelope.from_bytes(envelopes[0]).payload)
    forged = dataclasses.replace(result, payload=one_site)
    with pytest.raises(AggregateMismatchError, match="differs from the sum"):
        fed.custodian(tmp_path / "ledger.jsonl").decrypt(forged, envelopes)
    assert not (tmp_path / "ledger.jsonl").exists()


def test_an_aggregator_that_adds_its_own_vector_is_caught(fed: Federation, tmp_path: Path) -> None:
    result, envelopes = _round(fed, "cust-0004")
    layout = result.spec.tensor_layout
    context = fed.public.load_context()
    summed = load_encrypted_vector(result.payload, context, fed.public.params, layout.numel)
    injected = encrypt_vector(np.full(layout.numel, 0.01), context, fed.public.params)
    tampered = dataclasses.replace(result, payload=(summed + injected).to_bytes())
    with pytest.raises(AggregateMismatchError, match="differs from the sum"):
        fed.custodian(tmp_path / "ledger.jsonl").decrypt(tampered, envelopes)


def test_an_aggregate_claiming_other_contributors_is_refused(
    fed: Federation, tmp_path: Path
) -> None:
    result, envelopes = _round(fed, "cust-0005")
    padded = dataclasses.replace(result, accepted=(*result.accepted, result.accepted[0]))
    with pytest.raises(AggregateMismatchError, match="contributor list"):
        fed.custodian(tmp_path / "ledger.jsonl").decrypt(padded, envelopes)
    with pytest.raises(AggregateMismatchError, match="quorum"):
        fed.custodian(tmp_path / "ledger.jsonl").decrypt(result, envelopes[:1])


@pytest.mark.parametrize("claimed_dp", [None, {"epsilon": 1.0}], ids=["no-dp", "claims-dp"])
def test_a_site_that_encrypts_more_than_its_clip_norm_is_withheld(
    claimed_dp: dict[str, float] | None, fed: Federation, tmp_path: Path
) -> None:
    """A keyed site declares clip_norm=CLIP but encrypts a delta 100x longer; claiming DP
    noise in its own header must not switch the custodian's norm check off (the
    aggregator now refuses such a claim outright: the norm bound comes from the spec)."""
    spec = _spec(fed, f"cust-0006-{'dp' if claimed_dp else 'plain'}")
    honest = [
        fed.update(site, spec, config=SiteUpdateConfig(clip_norm=CLIP)).envelope
        for site in SITES[:2]
    ]
    inflated = {
        name: ref + 100 * (tensor - ref)
        for (name, tensor), ref in zip(
            fed.trained("site-02").items(), fed.reference.values(), strict=True
        )
    }
    big = build_site_update(
        trained=inflated,
        reference=fed.reference,
        spec=spec.model_copy(update={"clip_norm": None}),
        site_id="site-02",
        weight=1000.0,
        public=fed.public,
        signer=fed.site_keys["site-02"],
        config=SiteUpdateConfig(clip_norm=1e6),
    )
    sealed = SealedEnvelope.from_bytes(big.envelope)
    header = dataclasses.replace(
        EnvelopeHeader.from_bytes(sealed.header_bytes), clip_norm=CLIP, dp=claimed_dp
    )
    cheat = seal_envelope(header, sealed.payload, fed.site_keys["site-02"])
    envelopes = [*honest, cheat]
    result = aggregate_updates(envelopes, fed.registered, spec, fed.public, 2)
    if claimed_dp is not None:
        # A DP claim the round's rule does not make is refused before any decryption.
        assert result.rejections == [("site-02", "wrong_dp")]
        return
    assert [u.site_id for u in result.accepted] == list(SITES)  # undetectable while encrypted
    with pytest.raises(AggregateNormError, match="above the clip norm"):
        fed.custodian(tmp_path / "ledger.jsonl").decrypt(result, envelopes)


@pytest.mark.parametrize("attack", ["edit", "drop_first", "foreign_key"])
def test_a_tampered_ledger_stops_the_custodian(
    attack: str, fed: Federation, tmp_path: Path
) -> None:
    path = tmp_path / "ledger.jsonl"
    custodian = fed.custodian(path)
    for round_id in ("cust-0007", "cust-0008"):
        custodian.decrypt(*_round(fed, round_id))
    lines = path.read_bytes().splitlines()
    if attack == "edit":
        entry = json.loads(lines[0])
        entry["record"]["round_id"] = "cust-9999"  # erase the trace of round cust-0007
        lines[0] = json.dumps(entry).encode()
        path.write_bytes(b"\n".join(lines) + b"\n")
        expected = "not signed by this custodian"
        custodian = fed.custodian(path)
    elif attack == "drop_first":
        path.write_bytes(lines[1] + b"\n")
        expected = "hash chain broken"
        custodian = fed.custodian(path)
    else:
        custodian = Custodian(
            fed.secret,
            fed.registered,
            CustodianLedger(path, CompositeSigningKey.generate()),
        )
        expected = "not signed by this custodian"
    with pytest.raises(LedgerError, match=expected):
        custodian.decrypt(*_round(fed, "cust-0009"))


def test_the_custodian_refuses_envelopes_outside_the_accepted_set(
    fed: Federation, tmp_path: Path
) -> None:
    """A rejected site's masks are removed with the survivors' reveals, so its
    ciphertext must never reach the custodian."""
    result, envelopes = _round(fed, "cust-0011")
    other_spec = _spec(fed, "cust-0012")
    stray = fed.update("site-03", other_spec, config=SiteUpdateConfig(clip_norm=CLIP)).envelope
    with pytest.raises(DecryptionError, match="not among the aggregate's accepted"):
        fed.custodian(tmp_path / "ledger.jsonl").decrypt(result, [*envelopes, stray])


def test_the_ledger_accounts_the_epsilon_of_every_dp_release(
    fed: Federation, tmp_path: Path
) -> None:
    rule = DPRule(noise_multiplier=2.0, delta=1e-5, epsilon_budget=100.0)
    custodian = fed.custodian(tmp_path / "ledger.jsonl")
    totals = []
    for round_id in ("cust-dp-1", "cust-dp-2"):
        spec = _spec(fed, round_id).model_copy(update={"dp": rule})
        config = SiteUpdateConfig(clip_norm=CLIP, dp=rule)
        envelopes = [
            fed.update(
                site, spec, config=config, ledger=PrivacyLedger.for_site(site, rule)
            ).envelope
            for site in SITES
        ]
        result = aggregate_updates(envelopes, fed.registered, spec, fed.public, 2)
        decryption = custodian.decrypt(result, envelopes)
        assert decryption.dp_epsilon is not None
        assert decryption.dp_epsilon[0] == pytest.approx(gaussian_epsilon(2.0, 1.0, 1, 1e-5))
        totals.append(decryption.dp_epsilon[1])
    assert totals[0] == pytest.approx(gaussian_epsilon(2.0, 1.0, 1, 1e-5))
    assert totals[1] == pytest.approx(gaussian_epsilon(2.0, 1.0, 2, 1e-5))
    assert totals[1] > totals[0]
