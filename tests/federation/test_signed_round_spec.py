"""The signed round spec's wrapper: its strict schema, refusals naming the field."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import torch

from tensorguard.codec import canonical_json, parse_json_object
from tensorguard.crypto import CompositeSigningKey
from tensorguard.federation._errors import FederationError
from tensorguard.federation._round_spec import (
    ROUND_SPEC_SIGNATURE_CONTEXT,
    RoundSpec,
    load_signed_round_spec,
    sign_round_spec,
)
from tests.federation.conftest import MAX_SITE_WEIGHT

COORDINATOR = CompositeSigningKey.generate()


@pytest.fixture(scope="module")
def spec(reference: dict[str, torch.Tensor]) -> RoundSpec:
    return RoundSpec.from_reference("signed-0001", "b" * 64, reference, MAX_SITE_WEIGHT)


@pytest.fixture(scope="module")
def signed(spec: RoundSpec) -> bytes:
    return sign_round_spec(spec, COORDINATOR)


def test_a_signed_spec_round_trips_and_its_body_is_the_spec(spec: RoundSpec, signed: bytes) -> None:
    assert load_signed_round_spec(signed, COORDINATOR.public_key()) == spec
    document = parse_json_object(signed, what="test")
    assert canonical_json(document["spec"]) == canonical_json(spec.model_dump(mode="json"))
    assert canonical_json(document) == signed


def _set(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda document: document.__setitem__(key, value)


MALFORMED: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("extra field", _set("issued_by", "x"), "issued_by: Extra inputs are not permitted"),
    ("missing signature", lambda d: d.__delitem__("signature"), "signature: Field required"),
    ("unknown format", _set("format", "v0"), "format: Input should be"),
    ("signature not hex", _set("signature", "zz"), "signature: String should match pattern"),
    ("odd-length signature", _set("signature", "abc"), "signature: String should match"),
    ("upper-case signature", _set("signature", "AB"), "signature: String should match"),
    ("fingerprint bad", _set("signer_fingerprint", "0"), "signer_fingerprint: String should"),
    ("spec not object", _set("spec", []), "spec: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(
    ("change", "message"), [(c, m) for _, c, m in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_wrappers_are_refused_naming_the_field(
    signed: bytes, change: Callable[[dict[str, Any]], None], message: str
) -> None:
    document = parse_json_object(signed, what="test")
    change(document)
    expected = f"signed round spec does not match its schema: {message}"
    with pytest.raises(FederationError, match=re.escape(expected)) as caught:
        load_signed_round_spec(canonical_json(document), COORDINATOR.public_key())
    assert "Re-open the round" in str(caught.value)


def test_duplicate_keys_are_refused(signed: bytes) -> None:
    doubled = signed.replace(b'"format":', b'"format":"x","format":', 1)
    with pytest.raises(FederationError, match="repeats the object key 'format'"):
        load_signed_round_spec(doubled, COORDINATOR.public_key())


def test_a_validly_signed_spec_with_invalid_rules_is_refused(spec: RoundSpec) -> None:
    body = spec.model_dump(mode="json")
    body["min_sites"] = 0
    document = {
        "format": "tensorguard.federation.signed-round-spec/v1",
        "spec": body,
        "signer_fingerprint": COORDINATOR.public_key().fingerprint(),
        "signature": COORDINATOR.sign(canonical_json(body), ROUND_SPEC_SIGNATURE_CONTEXT).hex(),
    }
    with pytest.raises(FederationError, match="verifies but its rules do not validate: min_sites"):
        load_signed_round_spec(canonical_json(document), COORDINATOR.public_key())
