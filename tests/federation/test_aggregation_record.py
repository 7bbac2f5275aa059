"""The aggregator's record and its reasons, word for word (#18 item 6).

The aggregation result is stored between the aggregate and decrypt stages and its
rejections are shown to the coordinator in the run's metadata: the tests pin its wire
header, its metadata and each refusal of a damaged record, and the detail of every
rule an envelope header can break, at the boundaries (an update made exactly when the
round opens or at its deadline counts; a zero weight does not). The mutation run on
federation/_aggregation.py found all of these unchecked.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tensorguard.codec import FrameWriter, canonical_json
from tensorguard.federation._aggregation import (
    AcceptedUpdate,
    AggregationResult,
    Rejection,
    RejectionReason,
    _dp_problem,
    _header_problem,
    aggregate_updates,
)
from tensorguard.federation._context import create_federation_context, load_secret_context
from tensorguard.federation._envelope import EnvelopeHeader
from tensorguard.federation._errors import FederationError, QuorumNotMetError
from tensorguard.federation._layout import TensorLayout, TensorSpec
from tensorguard.federation._params import FederationParams
from tensorguard.federation._privacy import DPRule
from tensorguard.federation._round_spec import RoundSpec
from tensorguard.federation._site_update import SiteUpdateConfig
from tests.federation.conftest import MAX_SITE_WEIGHT, Federation

OPENED = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
DEADLINE = OPENED + timedelta(hours=1)
CLIP = 1e6


def _spec(fed: Federation) -> RoundSpec:
    return RoundSpec.from_reference(
        "record-0001",
        "b" * 64,
        fed.reference,
        MAX_SITE_WEIGHT,
        OPENED,
        deadline=DEADLINE,
        clip_norm=CLIP,
        site_weight_caps={"site-00": 4800.0, "site-01": 130.0},
    )


def _result(fed: Federation) -> AggregationResult:
    return AggregationResult(
        spec=_spec(fed),
        public_context_sha256="c" * 64,
        accepted=(
            AcceptedUpdate("site-00", 4800.0, "d" * 64, "e" * 64),
            AcceptedUpdate("site-01", 130.0, "f" * 64, "0" * 64),
        ),
        rejected=(
            Rejection("site-02", RejectionReason.LATE, "update created later"),
            Rejection("<unreadable>", RejectionReason.MALFORMED, "not an envelope"),
        ),
        payload=b"\x01\x02ciphertexts",
    )


def test_the_result_header_is_the_documented_json(fed: Federation) -> None:
    result = _result(fed)
    data = result.to_bytes()
    header_length = int.from_bytes(data[5:9], "big")
    header = json.loads(data[9 : 9 + header_length])
    assert data[:5] == b"TGFA\x01"
    assert header == {
        "format": "tensorguard.federation.aggregate/v1",
        "spec": json.loads(result.spec.model_dump_json()),
        "public_context_sha256": "c" * 64,
        "accepted": [
            {
                "site_id": "site-00",
                "weight": 4800.0,
                "envelope_sha256": "d" * 64,
                "signer_fingerprint": "e" * 64,
            },
            {
                "site_id": "site-01",
                "weight": 130.0,
                "envelope_sha256": "f" * 64,
                "signer_fingerprint": "0" * 64,
            },
        ],
        "rejected": [
            {"site_id": "site-02", "reason": "late", "detail": "update created later"},
            {"site_id": "<unreadable>", "reason": "malformed", "detail": "not an envelope"},
        ],
    }
    assert header["spec"]["opened_at"] == "2026-12-03T09:00:00Z"
    rest = data[9 + header_length :]
    assert rest == len(result.payload).to_bytes(8, "big") + result.payload
    assert AggregationResult.from_bytes(data) == result


def test_the_result_metadata_names_sites_and_reasons_without_plaintext(fed: Federation) -> None:
    result = _result(fed)
    assert result.total_weight == 4930.0
    assert result.rejections == [("site-02", "late"), ("<unreadable>", "malformed")]
    assert result.metadata() == {
        "round_id": "record-0001",
        "accepted_sites": ["site-00", "site-01"],
        "accepted_count": 2,
        "rejected": [
            {"site_id": "site-02", "reason": "late", "detail": "update created later"},
            {"site_id": "<unreadable>", "reason": "malformed", "detail": "not an envelope"},
        ],
        "total_weight": 4930.0,
        "public_context_sha256": "c" * 64,
        "payload_bytes": 13,
    }


def _refusal(data: bytes) -> str:
    with pytest.raises(FederationError) as raised:
        AggregationResult.from_bytes(data)
    message = str(raised.value)
    assert message.startswith("aggregation result does not parse (")
    assert message.endswith("); re-run the aggregation")
    return message[len("aggregation result does not parse (") : -len("); re-run the aggregation")]


def _framed(header: dict[str, object], payload: bytes = b"") -> bytes:
    return (
        FrameWriter(b"TGFA", 1)
        .frame(canonical_json(header), length_size=4)
        .frame(payload, length_size=8)
        .to_bytes()
    )


def test_a_damaged_result_is_refused_with_the_damage_named(fed: Federation) -> None:
    data = _result(fed).to_bytes()
    header_length = int.from_bytes(data[5:9], "big")
    assert _refusal(b"TGFX" + data[4:]) == "FrameError: not a aggregation result (bad magic bytes)"
    assert _refusal(data[: 9 + header_length - 1]) == (
        f"FrameError: aggregation result is truncated in its header ({header_length} bytes "
        f"needed, {header_length - 1} left)"
    )
    assert _refusal(data[: 9 + header_length + 3]) == (
        "FrameError: aggregation result is truncated in its payload length (8 bytes needed, 3 left)"
    )
    assert _refusal(data[:-1]) == (
        "FrameError: aggregation result is truncated in its payload (13 bytes needed, 12 left)"
    )
    assert _refusal(data + b"!") == (
        "FrameError: aggregation result has 1 trailing bytes after its end"
    )
    assert _refusal(FrameWriter(b"TGFA", 1).frame(b"[]", length_size=4).to_bytes()) == (
        "JSONFormatError: aggregation result header must be a JSON object at the top level, "
        "not an array"
    )
    header = json.loads(data[9 : 9 + header_length])
    schema = "SchemaError: aggregation result header does not match its schema: "
    assert _refusal(_framed({**header, "format": "tensorguard.federation.aggregate/v2"})) == (
        f"{schema}format: Value error, must be 'tensorguard.federation.aggregate/v1', "
        "not 'tensorguard.federation.aggregate/v2'"
    )
    bad_reason = {**header, "rejected": [{"site_id": "s", "reason": "bored", "detail": ""}]}
    assert _refusal(_framed(bad_reason)).startswith(f"{schema}rejected.0.reason: Input should be")
    assert _refusal(_framed({**header, "rejected": [{"site_id": "s", "reason": "late"}]})) == (
        f"{schema}rejected.0.detail: Field required"
    )
    accepted = header["accepted"][0]
    for field, value, problem in [
        ("weight", "4930", "Input should be a valid number"),
        ("weight", True, "Input should be a valid number"),
        ("site_id", 7, "Input should be a valid string"),
        ("envelope_sha256", "AB" * 32, "String should match pattern '^[0-9a-f]{64}$'"),
    ]:
        changed = {**header, "accepted": [{**accepted, field: value}]}
        assert _refusal(_framed(changed)) == f"{schema}accepted.0.{field}: {problem}", field
    assert _refusal(_framed({**header, "extra": 1})) == (
        f"{schema}extra: Extra inputs are not permitted"
    )
    del header["public_context_sha256"]
    assert _refusal(_framed(header)) == f"{schema}public_context_sha256: Field required"


@pytest.fixture(scope="module")
def honest_header(fed: Federation) -> EnvelopeHeader:
    spec = _spec(fed)
    update = fed.update("site-00", spec, config=SiteUpdateConfig(clip_norm=CLIP))
    return dataclasses.replace(update.header, created_at=OPENED + timedelta(minutes=5))


def _problem(fed: Federation, header: EnvelopeHeader, **changes: Any) -> object:
    return _header_problem(dataclasses.replace(header, **changes), _spec(fed), fed.public)


def test_each_broken_rule_is_named_with_its_detail(
    fed: Federation, honest_header: EnvelopeHeader
) -> None:
    assert _problem(fed, honest_header) is None
    spec = _spec(fed)
    cases: list[tuple[dict[str, object], RejectionReason, str]] = [
        (
            {"round_id": "record-0002"},
            RejectionReason.WRONG_ROUND,
            "update is for round 'record-0002', aggregating 'record-0001'",
        ),
        (
            {"created_at": OPENED - timedelta(seconds=1)},
            RejectionReason.STALE,
            "update created 2026-12-03T08:59:59+00:00, before the round opened",
        ),
        (
            {"created_at": DEADLINE + timedelta(seconds=1)},
            RejectionReason.LATE,
            "update created 2026-12-03T10:00:01+00:00, after the round's deadline",
        ),
        (
            {"base_model_digest": "a" * 64},
            RejectionReason.WRONG_BASE_MODEL,
            "update is for another base model",
        ),
        (
            {"reference_digest": "a" * 64},
            RejectionReason.WRONG_REFERENCE,
            "update starts from another reference adapter",
        ),
        (
            {"public_context_sha256": "a" * 64},
            RejectionReason.WRONG_CONTEXT,
            "update is encrypted under another federation key",
        ),
        (
            {"layout": TensorLayout((TensorSpec("x.lora_A.weight", (4, 4)),))},
            RejectionReason.LAYOUT_MISMATCH,
            "tensor names or shapes differ from the round's",
        ),
        (
            {"weight": 0.0},
            RejectionReason.INVALID_WEIGHT,
            f"weight 0.0 is not within (0, {spec.max_site_weight}]",
        ),
        (
            {"weight": 4800.5},
            RejectionReason.OVER_WEIGHT_CAP,
            "weight 4800.5 declared; the site registry allows at most 4800.0",
        ),
        (
            {"site_id": "site-07"},
            RejectionReason.OVER_WEIGHT_CAP,
            f"weight {honest_header.weight} declared; the site registry allows no weight in "
            "this round",
        ),
        (
            {"clip_norm": 5.0},
            RejectionReason.WRONG_CLIP_NORM,
            f"update clipped to 5.0, the round requires {CLIP}",
        ),
    ]
    for changes, reason, detail in cases:
        assert _problem(fed, honest_header, **changes) == (reason, detail), changes


def test_the_round_window_and_the_weight_cap_are_inclusive(
    fed: Federation, honest_header: EnvelopeHeader
) -> None:
    for moment in (OPENED, DEADLINE):
        assert _problem(fed, honest_header, created_at=moment) is None
    assert _problem(fed, honest_header, weight=4800.0) is None
    assert _problem(fed, honest_header, weight=1e-9) is None


def test_the_dp_report_must_match_the_rounds_dp_rule(
    fed: Federation, honest_header: EnvelopeHeader
) -> None:
    rule = DPRule(noise_multiplier=1.1, delta=1e-5, epsilon_budget=8.0)
    plain = _spec(fed)
    private = plain.model_copy(update={"dp": rule})
    report = {"round_id": "record-0001", "noise_multiplier": 1.1, "delta": 1e-5, "noise_std": 0.1}

    assert _dp_problem(dataclasses.replace(honest_header, dp=None), plain) is None
    assert _dp_problem(dataclasses.replace(honest_header, dp=report), private) is None
    assert _dp_problem(dataclasses.replace(honest_header, dp=report), plain) == (
        RejectionReason.WRONG_DP,
        "update reports DP noise; the round has no DP rule",
    )
    assert _dp_problem(dataclasses.replace(honest_header, dp=None), private) == (
        RejectionReason.WRONG_DP,
        "update reports no DP noise; the round requires noise multiplier 1.1 at delta 1e-05",
    )
    for key, wrong in (("round_id", "record-0000"), ("noise_multiplier", 0.5), ("delta", 1e-3)):
        reported = {**report, key: wrong}
        expected = (reported["round_id"], reported["noise_multiplier"], reported["delta"])
        assert _dp_problem(dataclasses.replace(honest_header, dp=reported), private) == (
            RejectionReason.WRONG_DP,
            f"update reports DP (round, noise multiplier, delta) {expected}; the round "
            "requires ('record-0001', 1.1, 1e-05)",
        ), key


def test_screening_and_one_update_per_site_give_each_rejection_its_detail(
    fed: Federation,
) -> None:
    spec = fed.spec("record-0003")
    first, second = (fed.update("site-00", spec).envelope for _ in range(2))
    site_01, site_02 = (fed.update(site, spec).envelope for site in ("site-01", "site-02"))
    unknown = fed.update("site-11", spec).envelope
    keys = {site: key for site, key in fed.registered.items() if site != "site-11"}
    envelopes = [first, site_01, site_02, second, site_01, unknown, b"not an envelope"]

    result = aggregate_updates(envelopes, keys, spec, fed.public, min_sites=2)
    # site-00 sorts first: its conflict must not stop the sites after it from counting
    assert [update.site_id for update in result.accepted] == ["site-01", "site-02"]
    assert result.rejected == (
        Rejection("site-11", RejectionReason.UNKNOWN_SITE, "site is not registered"),
        Rejection(
            "<unreadable>",
            RejectionReason.MALFORMED,
            "not a site-update envelope (bad magic bytes)",
        ),
        Rejection(
            "site-00",
            RejectionReason.CONFLICTING_UPDATES,
            "site signed 2 different updates for this round",
        ),
        Rejection(
            "site-00",
            RejectionReason.CONFLICTING_UPDATES,
            "site signed 2 different updates for this round",
        ),
        Rejection("site-01", RejectionReason.REPLAYED, "identical copy of an accepted update"),
    )

    with pytest.raises(QuorumNotMetError) as raised:
        aggregate_updates(envelopes, keys, spec, fed.public, min_sites=3)
    assert str(raised.value) == (
        "round 'record-0003': only 2 valid site updates, quorum is 3; rejected: site-11: "
        "unknown_site, <unreadable>: malformed, site-00: conflicting_updates, site-00: "
        "conflicting_updates, site-01: replayed. Wait for more sites or fix the rejected "
        "updates, then re-run the aggregation"
    )
    assert raised.value.rejections == tuple((r.site_id, r.reason.value) for r in result.rejected)

    with pytest.raises(QuorumNotMetError) as raised:
        aggregate_updates([site_01, site_02], keys, spec, fed.public, min_sites=3)
    assert str(raised.value).startswith(
        "round 'record-0003': only 2 valid site updates, quorum is 3; rejected: none. Wait"
    )
    assert raised.value.rejections == ()


def test_the_quorum_setting_must_lie_between_two_and_max_sites(fed: Federation) -> None:
    max_sites = fed.public.params.max_sites
    for min_sites in (1, max_sites + 1):
        with pytest.raises(FederationError) as raised:
            aggregate_updates([], fed.registered, fed.spec(), fed.public, min_sites=min_sites)
        assert str(raised.value) == (
            f"min_sites={min_sites} must be between 2 and max_sites={max_sites}: an aggregate "
            "of one site would reveal that site's update to the custodian"
        )
    # max_sites itself is a valid quorum: the refusal is then the quorum's, not the setting's
    with pytest.raises(QuorumNotMetError, match=f"quorum is {max_sites};"):
        aggregate_updates([], fed.registered, fed.spec(), fed.public, min_sites=max_sites)


def test_an_aggregate_may_hold_max_sites_updates_and_no_more(fed: Federation) -> None:
    keys = create_federation_context(FederationParams(max_sites=2))
    small = Federation(
        keys.public,
        load_secret_context(keys.secret_context_bytes, keys.public),
        fed.site_keys,
        fed.registered,
        fed.reference,
    )
    spec = small.spec("record-0004")
    envelopes = [small.update(site, spec).envelope for site in ("site-00", "site-01", "site-02")]
    result = aggregate_updates(envelopes[:2], small.registered, spec, small.public, min_sites=2)
    assert [update.site_id for update in result.accepted] == ["site-00", "site-01"]
    with pytest.raises(FederationError) as raised:
        aggregate_updates(envelopes, small.registered, spec, small.public, min_sites=2)
    assert str(raised.value) == (
        "3 valid updates exceed the ceremony's max_sites=2; their sum could overflow the "
        "CKKS modulus. Re-run the ceremony with a larger max_sites"
    )
