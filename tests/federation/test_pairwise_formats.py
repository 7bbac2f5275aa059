"""Pairwise offers, accepted-set acknowledgements and seed reveals: the strict schemas
of their signed bodies and their unchanged wire bytes."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any

import pytest

from tensorguard.codec import FrameWriter, canonical_json, parse_json_object
from tensorguard.crypto import CIPHERTEXT_SIZE
from tensorguard.federation._pairwise import (
    ACK_MAGIC,
    OFFER_MAGIC,
    REVEAL_MAGIC,
    REVEAL_VERSION,
    VERSION,
    AcceptedSetAck,
    PairwiseError,
    PairwiseOffer,
    SeedReveal,
)

OFFER = PairwiseOffer(
    "epoch-0001",
    "site-00",
    "site-01",
    "a" * 64,
    "b" * 64,
    bytes(range(256)) * 4 + bytes(96),
    b"sig",
)
ACK = AcceptedSetAck(
    "epoch-0001", "round-0007", "site-00", "c" * 64, ("site-00", "site-01", "site-03"), b"sig"
)
REVEAL = SeedReveal(
    "epoch-0001",
    "round-0007",
    "site-00",
    "d" * 64,
    ("site-00", "site-01"),
    {"site-02": bytes(32), "site-04": bytes(range(32))},
    bytes(range(1, 33)),
    b"sig",
)
# SHA-256 of body() and to_bytes() of the three messages above, computed with the
# hand-written parser that preceded the pydantic schemas (commit d941935).
GOLDEN = {
    "offer": (
        "365e8c217e8ef04b573e846d04cfb74429dde11989fad31c3eea5b5127d9b64f",
        "2cca504fe754d331740b2405052ed1d459739916fac8c1161b532f3d4359e1b9",
    ),
    "ack": (
        "3bdce189eef12c9efacfdcce59b557c3fd6931545ca7ad77c873b31383a5acf4",
        "eed2354b832f62683dd6722fb266fa33f6bcdda65db648c97735392a59dbf7e9",
    ),
    "reveal": (
        "1bdaa6239a3d3dafdc2b3149bddb7367857d78f0add3cdc27f4eda5bf0f9b09a",
        "e37cc09a09901652604e859ac0983e65affc9c5f67bf9bc8ef13bcfba4ea9154",
    ),
}
MESSAGES: dict[str, Any] = {"offer": OFFER, "ack": ACK, "reveal": REVEAL}
FRAMING = {
    "offer": (OFFER_MAGIC, VERSION, "pairwise offer"),
    "ack": (ACK_MAGIC, VERSION, "accepted-set acknowledgement"),
    "reveal": (REVEAL_MAGIC, REVEAL_VERSION, "seed reveal"),
}


@pytest.mark.parametrize("kind", sorted(MESSAGES))
def test_bytes_are_unchanged_and_round_trip(kind: str) -> None:
    message = MESSAGES[kind]
    assert hashlib.sha256(message.body()).hexdigest() == GOLDEN[kind][0]
    assert hashlib.sha256(message.to_bytes()).hexdigest() == GOLDEN[kind][1]
    parsed = type(message).from_bytes(message.to_bytes())
    assert parsed == message
    assert parsed.to_bytes() == message.to_bytes()


def _with_body(kind: str, change: Callable[[dict[str, Any]], object]) -> bytes:
    magic, version, _ = FRAMING[kind]
    document = parse_json_object(MESSAGES[kind].body(), what="test")
    changed = change(document)
    body = canonical_json(document if changed is None else changed)
    return (
        FrameWriter(magic, version).frame(body, length_size=4).frame(b"s", length_size=4).to_bytes()
    )


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda document: document.__setitem__(key, value)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda document: document.__delitem__(key)


MALFORMED: list[tuple[str, str, Callable[[dict[str, Any]], object], str]] = [
    ("offer", "extra field", _set("note", "x"), "note: Extra inputs are not permitted"),
    ("offer", "missing field", _drop("recipient"), "recipient: Field required"),
    ("offer", "unknown format", _set("format", "x/v9"), "format: Input should be"),
    ("offer", "bad epoch", _set("epoch_id", "-bad"), "epoch_id: Value error, is not a valid epoch"),
    ("offer", "bad site", _set("sender", "Site 0"), "sender: Value error, site id 'Site 0' is"),
    ("offer", "site not text", _set("sender", 0), "sender: Input should be a valid string"),
    (
        "offer",
        "fingerprint upper case",
        _set("sender_key_fingerprint", "A" * 64),
        "sender_key_fingerprint: String should match pattern",
    ),
    (
        "offer",
        "short ciphertext",
        _set("kem_ciphertext", "00" * (CIPHERTEXT_SIZE - 1)),
        f"kem_ciphertext: Value error, must be {CIPHERTEXT_SIZE} bytes in lower-case hex",
    ),
    (
        "offer",
        "upper-case ciphertext",
        _set("kem_ciphertext", "AB" * CIPHERTEXT_SIZE),
        f"kem_ciphertext: Value error, must be {CIPHERTEXT_SIZE} bytes in lower-case hex",
    ),
    (
        "offer",
        "ciphertext not hex",
        _set("kem_ciphertext", "zz"),
        "kem_ciphertext: Value error, is",
    ),
    ("ack", "round not text", _set("round_id", 7), "round_id: Input should be a valid string"),
    (
        "ack",
        "bad round",
        _set("round_id", "r" * 200),
        "round_id: Value error, is not a valid round",
    ),
    (
        "ack",
        "unsorted set",
        _set("accepted", ["site-01", "site-00"]),
        "accepted: Value error, must be sorted without repeats",
    ),
    (
        "ack",
        "repeated site",
        _set("accepted", ["site-00", "site-00"]),
        "accepted: Value error, must be sorted without repeats",
    ),
    ("ack", "set not list", _set("accepted", "site-00"), "accepted: Input should be a valid list"),
    ("ack", "bad site in set", _set("accepted", ["site-00", "X"]), "accepted.1: Value error, site"),
    ("reveal", "seeds not object", _set("seeds", []), "seeds: Input should be a valid dictionary"),
    (
        "reveal",
        "bad peer",
        _set("seeds", {"Peer!": "00" * 32}),
        "seeds.Peer!.[key]: Value error, site id 'Peer!' is invalid",
    ),
    (
        "reveal",
        "short seed",
        _set("seeds", {"site-02": "00" * 31}),
        "seeds.site-02: Value error, must be 32 bytes in lower-case hex",
    ),
    ("reveal", "seed not text", _set("self_seed", 5), "self_seed: Value error, must be lower-case"),
    (
        "reveal",
        "missing self seed",
        _drop("self_seed"),
        "self_seed: Field required",
    ),
]


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [(k, c, m) for k, _, c, m in MALFORMED],
    ids=[f"{k}-{i}" for k, i, _, _ in MALFORMED],
)
def test_malformed_bodies_are_refused_naming_the_field(
    kind: str, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    what = FRAMING[kind][2]
    expected = f"{what} body does not match its schema: {message}"
    with pytest.raises(PairwiseError, match=re.escape(expected)):
        type(MESSAGES[kind]).from_bytes(_with_body(kind, change))


def test_refusals_do_not_repeat_seed_material() -> None:
    planted = "5eed" * 16
    data = _with_body("reveal", _set("seeds", {"site-02": [planted]}))
    with pytest.raises(PairwiseError, match=r"seeds\.site-02") as caught:
        SeedReveal.from_bytes(data)
    assert planted not in str(caught.value)
