"""Freshness statements at their limits and every refusal word for word (#18 item 6).

``tensorguard/tgsp/_freshness.py`` signs and checks a channel's minimum version. These
tests sign real statements with the session's producer key and check the document
layout, the size, clock and expiry limits one unit either side, and the full text of
each refusal.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from tensorguard.codec import canonical_json
from tensorguard.crypto import CompositeSigningKey
from tensorguard.tgsp import PolicyError, RollbackError, TrustStore
from tensorguard.tgsp._freshness import (
    FreshnessError,
    FreshnessStatement,
    StaleReleaseError,
    check_freshness,
    issue_freshness,
    verify_freshness,
)

NOW = 1_767_225_600
WEEK = 7 * 86_400


def fresh_error(
    document: bytes, trust_store: TrustStore, *, channel: str = "stable", now: int = NOW
) -> str:
    with pytest.raises(FreshnessError) as caught:
        verify_freshness(document, trust_store, channel=channel, now=now)
    return str(caught.value)


def test_the_signed_document_is_canonical_and_complete(
    producer: CompositeSigningKey, trust_store: TrustStore
) -> None:
    document = issue_freshness("stable", 3, producer, now=NOW)
    outer = json.loads(document)
    assert document == canonical_json(outer)
    statement = {
        "channel": "stable",
        "minimum_version": 3,
        "issued_at": NOW,
        "expires_at": NOW + WEEK,
    }
    assert outer["format"] == "tensorguard.freshness/v1"
    assert outer["statement"] == statement
    assert outer["key_id"] == producer.public_key().fingerprint()
    signature = base64.b64decode(outer["signature"], validate=True)
    producer.public_key().verify(canonical_json(statement), signature, b"tensorguard/freshness/v1")
    assert verify_freshness(document, trust_store, channel="stable", now=NOW) == (
        FreshnessStatement("stable", 3, NOW, NOW + WEEK)
    )


def test_issuing_checks_the_channel_and_positive_numbers(producer: CompositeSigningKey) -> None:
    statement = json.loads(issue_freshness("beta", 1, producer, now=NOW, valid_for_seconds=1))
    assert statement["statement"]["expires_at"] == NOW + 1
    for minimum, valid in ((0, 10), (5, 0), (-1, 10)):
        with pytest.raises(
            ValueError, match=r"^minimum_version and valid_for_seconds must be positive$"
        ):
            issue_freshness("stable", minimum, producer, now=NOW, valid_for_seconds=valid)
    with pytest.raises(ValueError, match="is not a channel name"):
        issue_freshness("Stable", 1, producer, now=NOW)


def test_the_document_may_be_64_kib_and_no_larger(
    producer: CompositeSigningKey, trust_store: TrustStore
) -> None:
    document = issue_freshness("stable", 3, producer, now=NOW)
    padded = document + b" " * (64 * 1024 - len(document))
    assert verify_freshness(padded, trust_store, channel="stable", now=NOW).minimum_version == 3
    assert fresh_error(padded + b" ", trust_store) == "freshness statement is larger than 64 KiB"


def reshaped(document: bytes, change: Any) -> bytes:
    outer = json.loads(document)
    change(outer)
    return json.dumps(outer).encode()


MALFORMED = "freshness statement is malformed: "


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (
            lambda d: d.update(format="tensorguard.freshness/v2"),
            "expected a tensorguard.freshness/v1 document",
        ),
        (lambda d: d.update(extra=1), "expected a tensorguard.freshness/v1 document"),
        (lambda d: d.pop("key_id"), "expected a tensorguard.freshness/v1 document"),
        (
            lambda d: d.update(statement=[1]),
            "statement needs channel, minimum_version, issued_at, expires_at",
        ),
        (
            lambda d: d["statement"].pop("issued_at"),
            "statement needs channel, minimum_version, issued_at, expires_at",
        ),
        (
            lambda d: d["statement"].update(more=1),
            "statement needs channel, minimum_version, issued_at, expires_at",
        ),
        (
            lambda d: d["statement"].update(minimum_version=-1),
            "versions and times must be non-negative integers",
        ),
        (
            lambda d: d["statement"].update(issued_at=True),
            "versions and times must be non-negative integers",
        ),
        (
            lambda d: d["statement"].update(expires_at="9"),
            "versions and times must be non-negative integers",
        ),
        (lambda d: d["statement"].update(channel=5), "channel and key_id must be strings"),
        (lambda d: d.update(key_id=5), "channel and key_id must be strings"),
    ],
)
def test_each_malformed_shape_is_named(
    producer: CompositeSigningKey, trust_store: TrustStore, change: Any, reason: str
) -> None:
    document = reshaped(issue_freshness("stable", 3, producer, now=NOW), change)
    assert fresh_error(document, trust_store) == MALFORMED + reason


def test_other_malformed_documents(producer: CompositeSigningKey, trust_store: TrustStore) -> None:
    document = issue_freshness("stable", 3, producer, now=NOW)
    assert fresh_error(b"[]", trust_store) == (
        MALFORMED + "freshness statement must be a JSON object at the top level, not an array"
    )
    assert fresh_error(b"not json", trust_store).startswith(MALFORMED)
    floats = reshaped(document, lambda d: d["statement"].update(minimum_version=3.0))
    assert fresh_error(floats, trust_store) == (
        MALFORMED + "freshness statement contains the non-integer number '3.0'"
    )
    upper = reshaped(document, lambda d: d["statement"].update(channel="Stable"))
    message = fresh_error(upper, trust_store)
    assert message.startswith(MALFORMED + "'Stable' is not a channel name")
    unpadded = reshaped(document, lambda d: d.update(signature=d["signature"] + "!"))
    assert fresh_error(unpadded, trust_store).startswith(MALFORMED)
    zeros = reshaped(
        document,
        lambda d: d["statement"].update(minimum_version=0, issued_at=0, expires_at=0),
    )
    assert "signature rejected" in fresh_error(zeros, trust_store)


def test_only_a_pinned_key_with_a_valid_signature_is_believed(
    producer: CompositeSigningKey, stranger: CompositeSigningKey, trust_store: TrustStore
) -> None:
    foreign = issue_freshness("stable", 3, stranger, now=NOW)
    assert fresh_error(foreign, trust_store) == (
        f"freshness statement is signed by key {stranger.public_key().fingerprint()[:16]}…, "
        "which is not in the trust store"
    )
    edited = reshaped(
        issue_freshness("stable", 3, producer, now=NOW),
        lambda d: d["statement"].update(minimum_version=1),
    )
    message = fresh_error(edited, trust_store)
    assert message.startswith("freshness statement signature rejected: ")
    other_context = reshaped(
        issue_freshness("stable", 3, producer, now=NOW),
        lambda d: d.update(
            signature=base64.b64encode(
                producer.sign(canonical_json(d["statement"]), b"tensorguard/tgsp/v3/header")
            ).decode()
        ),
    )
    assert fresh_error(other_context, trust_store).startswith(
        "freshness statement signature rejected: "
    )


def test_the_channel_must_be_the_callers(
    producer: CompositeSigningKey, trust_store: TrustStore
) -> None:
    document = issue_freshness("beta", 3, producer, now=NOW)
    assert fresh_error(document, trust_store) == (
        "freshness statement is for channel 'beta', not 'stable'"
    )


def test_issue_time_allows_five_minutes_of_skew(
    producer: CompositeSigningKey, trust_store: TrustStore
) -> None:
    document = issue_freshness("stable", 3, producer, now=NOW + 300)
    verify_freshness(document, trust_store, channel="stable", now=NOW)
    later = issue_freshness("stable", 3, producer, now=NOW + 301)
    assert fresh_error(later, trust_store) == (
        "freshness statement was issued in the future; check the clocks"
    )


def test_a_statement_expires_at_its_expiry_second(
    producer: CompositeSigningKey, trust_store: TrustStore
) -> None:
    document = issue_freshness("stable", 3, producer, now=NOW, valid_for_seconds=100)
    verify_freshness(document, trust_store, channel="stable", now=NOW + 99)
    for now in (NOW + 100, NOW + 101):
        assert fresh_error(document, trust_store, now=now) == (
            f"freshness statement for 'stable' expired at {NOW + 100} (now {now}); the registry "
            "must re-issue it (LocalRegistry.publish_freshness)"
        )


def test_a_release_below_the_minimum_is_stale() -> None:
    statement = FreshnessStatement("stable", 4, NOW, NOW + WEEK)
    check_freshness(statement, 4)
    check_freshness(statement, 5)
    with pytest.raises(StaleReleaseError) as caught:
        check_freshness(statement, 3)
    assert str(caught.value) == (
        f"version 3 of channel 'stable' is older than the signed minimum version 4 (issued at "
        f"{NOW}); refusing a stale release"
    )
    assert isinstance(caught.value, RollbackError)
    assert issubclass(FreshnessError, PolicyError)
