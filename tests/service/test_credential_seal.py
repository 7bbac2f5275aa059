"""Connector credential sealing: AES-GCM under a key derived from TG_SECRET_KEY."""

from __future__ import annotations

import pytest

from tensorguard.service.credential_seal import CredentialSeal, CredentialSealError

SECRET = b"s" * 40


def test_round_trip_and_no_plaintext() -> None:
    seal = CredentialSeal(SECRET)
    sealed = seal.seal("broker-password-123", name="plant-mqtt", kind="mqtt")
    assert "broker-password-123" not in sealed
    assert sealed != seal.seal("broker-password-123", name="plant-mqtt", kind="mqtt")  # nonce
    assert seal.unseal(sealed, name="plant-mqtt", kind="mqtt") == "broker-password-123"
    assert "s" * 40 not in repr(seal)


@pytest.mark.parametrize(
    ("secret", "name", "kind"),
    [
        (b"t" * 40, "plant-mqtt", "mqtt"),
        (SECRET, "other", "mqtt"),
        (SECRET, "plant-mqtt", "webhook"),
    ],
)
def test_another_key_or_connector_does_not_unseal(secret: bytes, name: str, kind: str) -> None:
    sealed = CredentialSeal(SECRET).seal("pw", name="plant-mqtt", kind="mqtt")
    with pytest.raises(CredentialSealError, match="do not unseal"):
        CredentialSeal(secret).unseal(sealed, name=name, kind=kind)


def test_edited_value_does_not_unseal() -> None:
    seal = CredentialSeal(SECRET)
    sealed = seal.seal("pw", name="n", kind="mqtt")
    edited = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    for bad in (edited, "pw", "v1:***"):
        with pytest.raises(CredentialSealError):
            seal.unseal(bad, name="n", kind="mqtt")
