"""Node request signatures without a server: every signed field is bound."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorguard.service.errors import AuthenticationError
from tensorguard.service.request_signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignedRequest,
    check_freshness,
    check_nonce_format,
    load_public_key,
    parse_timestamp,
    public_key_hex,
    sign_request,
    verify_signature,
)

KEY = Ed25519PrivateKey.generate()
PUBLIC = load_public_key(public_key_hex(KEY.public_key()))

requests_ = st.builds(
    SignedRequest,
    method=st.sampled_from(["GET", "POST", "PUT"]),
    path=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/-?=&", min_size=1, max_size=40),
    body=st.binary(max_size=200),
    timestamp=st.integers(min_value=0, max_value=2**40),
    nonce=st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True),
    node_id=st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True),
)


def _signed(request: SignedRequest) -> str:
    headers = sign_request(
        KEY,
        request.node_id,
        request.method,
        request.path,
        request.body,
        timestamp=request.timestamp,
        nonce=request.nonce,
    )
    assert headers[TIMESTAMP_HEADER] == str(request.timestamp)
    assert headers[NONCE_HEADER] == request.nonce
    return headers[SIGNATURE_HEADER]


@settings(max_examples=60)
@given(request=requests_, other=requests_)
def test_signature_binds_every_field(request: SignedRequest, other: SignedRequest) -> None:
    signature = _signed(request)
    verify_signature(PUBLIC, request, signature)
    for field in dataclasses.fields(SignedRequest):
        if getattr(other, field.name) == getattr(request, field.name):
            continue
        changed = dataclasses.replace(request, **{field.name: getattr(other, field.name)})
        with pytest.raises(AuthenticationError):
            verify_signature(PUBLIC, changed, signature)


def test_another_key_does_not_verify() -> None:
    request = SignedRequest("POST", "/v1/x", b"{}", 1, "n" * 16, "robot-1")
    other = load_public_key(public_key_hex(Ed25519PrivateKey.generate().public_key()))
    with pytest.raises(AuthenticationError, match="does not verify"):
        verify_signature(other, request, _signed(request))


@pytest.mark.parametrize("signature", ["", "!!!", "A" * 200, "QUJD"])
def test_malformed_signatures_are_refused(signature: str) -> None:
    request = SignedRequest("POST", "/v1/x", b"{}", 1, "n" * 16, "robot-1")
    with pytest.raises(AuthenticationError):
        verify_signature(PUBLIC, request, signature)


def test_header_formats() -> None:
    assert parse_timestamp("1700000000") == 1700000000
    for bad in ("", "-1", "1.5", "1e9", "9" * 13):
        with pytest.raises(AuthenticationError):
            parse_timestamp(bad)
    check_nonce_format("a" * 16)
    for bad in ("a" * 15, "a" * 65, "a" * 15 + "/", "a" * 15 + " "):
        with pytest.raises(AuthenticationError):
            check_nonce_format(bad)
    for bad_key in ("00" * 31, "zz" * 32, ""):
        with pytest.raises(AuthenticationError):
            load_public_key(bad_key)


def test_freshness_window() -> None:
    check_freshness(1000, 300, now=1300)
    check_freshness(1300, 300, now=1000)
    with pytest.raises(AuthenticationError, match="server clock"):
        check_freshness(1000, 300, now=1301)
