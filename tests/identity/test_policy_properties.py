"""Property tests for the issuance policy and the CSR parser (hypothesis)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorguard.identity import (
    CertificateRequestError,
    IssuancePolicy,
    IssuancePolicyError,
    Profile,
)
from tensorguard.identity.csr import parse_csr
from tensorguard.identity.policy import NODE_ID_PATTERN, decide, node_uri
from tests.identity.conftest import TRUST_DOMAIN, make_csr

POLICY = IssuancePolicy(
    trust_domain=TRUST_DOMAIN,
    service_dns_names=("broker.fleet.test.internal", "*.api.fleet.test.internal"),
)
KEY = ed25519.Ed25519PrivateKey.generate()
URI_TEXT = st.text(alphabet=st.sampled_from("abcAZ019.-_/:%@?#"), min_size=1, max_size=40)


@settings(max_examples=60)
@given(suffix=URI_TEXT, same_name=st.booleans())
def test_a_node_certificate_names_exactly_its_node_in_the_namespace(
    suffix: str, same_name: bool
) -> None:
    """Whatever URI a node asks for, an approval names spiffe://<domain>/node/<CN>."""
    common_name = suffix if same_name else "robot-1"
    uri = f"spiffe://{TRUST_DOMAIN}/node/{suffix}"
    csr = x509.load_pem_x509_csr(make_csr(KEY, common_name, [x509.UniformResourceIdentifier(uri)]))
    try:
        approval = decide(POLICY, csr, Profile.NODE)
    except IssuancePolicyError:
        return
    assert NODE_ID_PATTERN.fullmatch(suffix)
    assert suffix == common_name
    assert [str(name.value) for name in approval.names] == [node_uri(TRUST_DOMAIN, suffix)]


DNS_LABEL = st.text(alphabet=st.sampled_from("abz09-"), min_size=1, max_size=6)


@settings(max_examples=60)
@given(
    labels=st.lists(DNS_LABEL, min_size=1, max_size=3),
    tail=st.sampled_from(
        ["api.fleet.test.internal", "fleet.test.internal", "test.internal", "evil.example"]
    ),
)
def test_service_names_are_allowed_only_by_the_allow_list(labels: list[str], tail: str) -> None:
    name = ".".join([*labels, tail])
    allowed = POLICY.allows_service_name(name)
    expected = name == "broker.fleet.test.internal" or (
        tail == "api.fleet.test.internal" and len(labels) == 1
    )
    assert allowed == expected


@settings(max_examples=100)
@given(data=st.binary(max_size=600))
def test_the_csr_parser_refuses_garbage_with_its_own_error(data: bytes) -> None:
    with pytest.raises(CertificateRequestError):
        parse_csr(data)


@settings(max_examples=40)
@given(days=st.integers(min_value=-5, max_value=400))
def test_lifetimes_beyond_the_maximum_are_never_approved(days: int) -> None:
    csr = x509.load_pem_x509_csr(
        make_csr(
            KEY, "robot-1", [x509.UniformResourceIdentifier(node_uri(TRUST_DOMAIN, "robot-1"))]
        )
    )
    if 0 < days <= POLICY.max_lifetime_days:
        assert decide(POLICY, csr, Profile.NODE, timedelta(days=days)).lifetime.days == days
    else:
        with pytest.raises(IssuancePolicyError, match="lifetime"):
            decide(POLICY, csr, Profile.NODE, timedelta(days=days))
