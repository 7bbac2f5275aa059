"""The master-secret rules in detail: which encodings decode, where the strength and
cost limits lie, what the operator is told, and where the value is read from (#18 item
6: the mutation run on keys/_master.py found these edges and every message unchecked)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import random

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tensorguard.keys._errors import KeyProviderConfigError, KeyProviderProductionError
from tensorguard.keys._master import (
    DEFAULT_SCRYPT,
    MAX_SCRYPT,
    MasterSecret,
    ScryptParameters,
    _decoded_master,
    key_check_matches,
    key_check_value,
    master_secret_from_env,
    master_strength_problem,
    record_key,
)

HOW_TO = (
    "set TG_KEY_MASTER to the hex or base64 encoding of 32 random bytes from your secret "
    "manager, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`"
)
# 33 bytes whose base64 uses '+' and '/' (URL-safe: '-' and '_') and needs no padding
SPECIAL = bytes([0xFB, 0xEF, 0xFF] * 11)


def _random_bytes(count: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(count)


def test_standard_and_url_safe_base64_decode_to_the_same_bytes() -> None:
    standard = base64.b64encode(SPECIAL).decode()
    url_safe = base64.urlsafe_b64encode(SPECIAL).decode()
    assert "+" in standard
    assert "/" in standard
    assert "-" in url_safe
    assert "_" in url_safe
    assert _decoded_master(standard) == SPECIAL
    assert _decoded_master(url_safe) == SPECIAL


@pytest.mark.parametrize("count", [32, 34, 35])
def test_base64_padding_is_optional_and_may_be_missing_or_excess(count: int) -> None:
    data = _random_bytes(count, count)
    padded = base64.urlsafe_b64encode(data).decode()
    unpadded = padded.rstrip("=")
    assert _decoded_master(padded) == data
    assert _decoded_master(unpadded) == data
    if len(padded) == len(unpadded):  # 33-byte multiples need no padding; add some
        assert _decoded_master(unpadded + "=") == data
    else:
        assert _decoded_master(unpadded + "==") == data


def test_a_value_ending_in_x_keeps_its_last_characters() -> None:
    for seed in range(1000):
        data = _random_bytes(33, seed)  # 44 characters, the last one free
        encoded = base64.b64encode(data).decode()
        if encoded.endswith("X") and not encoded.endswith("XX"):
            break
    else:
        pytest.fail("no value ending in 'X' among 1000 seeds")
    assert _decoded_master(encoded) == data


@pytest.mark.parametrize("value", ["", "!" * 44, "A" * 45, "a" * 61, "=" * 2, "AB=C" * 11])
def test_what_is_neither_hex_nor_base64_decodes_to_nothing(value: str) -> None:
    assert _decoded_master(value) is None


def test_hex_is_tried_before_base64() -> None:
    assert _decoded_master("00ff" * 16) == bytes.fromhex("00ff" * 16)


def test_each_strength_problem_is_stated_in_full() -> None:
    assert master_strength_problem("x" * 40 + "!") == (
        "is neither hex nor base64, so its randomness cannot be checked"
    )
    assert master_strength_problem("ab" * 16) == (
        "encodes 16 bytes (128 bits); production needs 32 random bytes (256 bits)"
    )
    assert master_strength_problem((bytes(range(15)) * 3).hex()) == (
        "encodes bytes that repeat a short pattern, not random bytes"
    )
    # the limits themselves pass: 32 bytes with exactly 16 distinct values
    assert master_strength_problem((bytes(range(16)) * 2).hex()) is None


def test_production_refusals_say_why_and_how_to_fix_it() -> None:
    with pytest.raises(KeyProviderProductionError) as raised:
        MasterSecret.from_text("ab" * 16, production=True, name="TG_OTHER_MASTER")
    assert str(raised.value) == (
        "TG_OTHER_MASTER encodes 16 bytes (128 bits); production needs 32 random bytes "
        "(256 bits); TG_ENVIRONMENT=production refuses a master that is not demonstrably "
        "random: " + HOW_TO.replace("TG_KEY_MASTER", "TG_OTHER_MASTER")
    )
    with pytest.raises(KeyProviderConfigError) as config_raised:
        MasterSecret.from_text("short", production=False)
    assert str(config_raised.value) == (
        f"TG_KEY_MASTER is shorter than 32 characters (it has 5): {HOW_TO}"
    )


@pytest.mark.parametrize(
    ("params", "within"),
    [
        (DEFAULT_SCRYPT, True),
        (MAX_SCRYPT, True),
        (ScryptParameters(n=2**21), False),
        (ScryptParameters(r=9), False),
        (ScryptParameters(p=5), False),
        (ScryptParameters(n=2**14), False),
        (ScryptParameters(r=7), False),
        (ScryptParameters(p=0), False),
    ],
)
def test_scrypt_costs_must_lie_between_the_default_and_the_ceiling(
    params: ScryptParameters, within: bool
) -> None:
    assert params.is_within(DEFAULT_SCRYPT, MAX_SCRYPT) is within


def test_the_repr_says_only_which_kind_of_master_it_is(caplog: pytest.LogCaptureFixture) -> None:
    configured = MasterSecret.from_text("m" * 40, production=False)
    assert repr(configured) == "MasterSecret(<redacted>, configured)"
    assert not configured.ephemeral
    with caplog.at_level(logging.WARNING, logger="tensorguard.keys._master"):
        throwaway = MasterSecret.throwaway()
    assert repr(throwaway) == "MasterSecret(<redacted>, ephemeral)"
    assert throwaway.ephemeral is True
    assert len(throwaway._value) == 32
    assert caplog.messages == [
        "DEVELOPMENT ONLY: TG_KEY_MASTER is not set and TG_ALLOW_EPHEMERAL_KEYS=true, so keys "
        "are sealed under a THROWAWAY master secret that exists only in this process. Every "
        "key written now becomes unreadable when the process exits. Never use this in "
        "production."
    ]


def test_the_master_is_read_from_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TG_KEY_MASTER", "e" * 40)
    monkeypatch.delenv("TG_ENVIRONMENT", raising=False)
    secret = master_secret_from_env()
    assert not secret.ephemeral
    assert secret._value == b"e" * 40


def test_an_explicit_allow_ephemeral_overrides_the_environment_flag() -> None:
    assert master_secret_from_env({}, allow_ephemeral=True).ephemeral
    with pytest.raises(KeyProviderConfigError) as raised:
        master_secret_from_env({"TG_ALLOW_EPHEMERAL_KEYS": "true"}, allow_ephemeral=False)
    assert str(raised.value) == (
        f"TG_KEY_MASTER is not set: {HOW_TO}; for throwaway development keys set "
        "TG_ALLOW_EPHEMERAL_KEYS=true instead"
    )


def test_production_without_a_master_is_refused_with_or_without_the_ephemeral_flag() -> None:
    production = {"TG_ENVIRONMENT": "production"}
    with pytest.raises(KeyProviderProductionError) as raised:
        master_secret_from_env(production)
    assert str(raised.value) == (
        f"TG_ENVIRONMENT=production requires TG_KEY_MASTER for the file key provider: {HOW_TO}"
    )
    with pytest.raises(KeyProviderProductionError) as raised:
        master_secret_from_env({**production, "TG_ALLOW_EPHEMERAL_KEYS": "true"})
    assert str(raised.value) == (
        "TG_ENVIRONMENT=production requires TG_KEY_MASTER for the file key provider (throwaway "
        f"keys are never used in production): {HOW_TO}"
    )


def _hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 written out with hmac, independent of the code under test."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def test_the_key_check_and_record_keys_are_the_documented_hkdf_outputs() -> None:
    kek = bytes(range(32))
    record_salt = bytes(range(100, 132))
    assert key_check_value(kek) == _hkdf_sha256(kek, b"", b"tensorguard/keys/file/v1/key-check", 16)
    assert record_key(kek, record_salt) == _hkdf_sha256(
        kek, record_salt, b"tensorguard/keys/file/v1/record-key", 32
    )
    assert key_check_matches(kek, key_check_value(kek))
    assert not key_check_matches(kek, bytes(16))


def test_the_kek_is_scrypt_of_the_master_cached_per_salt_and_cost() -> None:
    secret = MasterSecret.from_text("m" * 40, production=False)
    cheap = ScryptParameters(n=2**10, r=8, p=1)
    first = secret.key_encryption_key(b"salt-one", cheap)
    assert first == Scrypt(salt=b"salt-one", length=32, n=2**10, r=8, p=1).derive(b"m" * 40)
    assert secret.key_encryption_key(b"salt-one", cheap) is first  # cached, not re-derived
    other_salt = secret.key_encryption_key(b"salt-two", cheap)
    other_cost = secret.key_encryption_key(b"salt-one", ScryptParameters(n=2**11, r=8, p=1))
    assert len({first, other_salt, other_cost}) == 3


def test_a_short_master_is_a_configuration_error_in_development_only() -> None:
    with pytest.raises(KeyProviderConfigError) as raised:
        MasterSecret.from_text("short", production=False)
    assert type(raised.value) is KeyProviderConfigError
    with pytest.raises(KeyProviderProductionError):
        MasterSecret.from_text("short", production=True)
    assert MasterSecret.from_text("m" * 40, production=False).ephemeral is False
