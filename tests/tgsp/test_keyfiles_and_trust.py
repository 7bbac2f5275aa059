"""Key files and trust stores: round trips and refusal of damaged or exposed files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.tgsp import KeyFileError, TrustStore, TrustStoreError
from tensorguard.tgsp._keyfiles import (
    load_recipient_private_key,
    load_recipient_public_key,
    load_signing_key,
    load_verify_key,
    write_key_file,
)


def test_all_key_types_round_trip(tmp_path: Path) -> None:
    signing = CompositeSigningKey.generate()
    recipient = XWingPrivateKey.generate()
    write_key_file(tmp_path / "s.key", signing)
    write_key_file(tmp_path / "s.pub", signing.public_key())
    write_key_file(tmp_path / "r.key", recipient)
    write_key_file(tmp_path / "r.pub", recipient.public_key())
    assert load_signing_key(tmp_path / "s.key").private_bytes() == signing.private_bytes()
    assert load_verify_key(tmp_path / "s.pub") == signing.public_key()
    assert (
        load_recipient_private_key(tmp_path / "r.key").private_bytes() == recipient.private_bytes()
    )
    assert load_recipient_public_key(tmp_path / "r.pub") == recipient.public_key()
    assert (tmp_path / "s.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "r.key").stat().st_mode & 0o777 == 0o600


def test_existing_key_file_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "s.key"
    write_key_file(path, CompositeSigningKey.generate())
    with pytest.raises(KeyFileError):
        write_key_file(path, CompositeSigningKey.generate())


def test_group_readable_private_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.key"
    write_key_file(path, CompositeSigningKey.generate())
    path.chmod(0o640)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_signing_key(path)


def test_damaged_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.key"
    write_key_file(path, CompositeSigningKey.generate())
    document = json.loads(path.read_text())
    document["key_id"] = "00" * 32
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="damaged"):
        load_signing_key(path)
    path.write_text("not json")
    with pytest.raises(KeyFileError):
        load_signing_key(path)


def test_key_of_the_wrong_type_is_refused(tmp_path: Path) -> None:
    write_key_file(tmp_path / "r.pub", XWingPrivateKey.generate().public_key())
    with pytest.raises(KeyFileError, match="xwing-public-key"):
        load_verify_key(tmp_path / "r.pub")


def test_key_file_never_shows_key_in_errors(tmp_path: Path) -> None:
    key = CompositeSigningKey.generate()
    path = tmp_path / "s.key"
    write_key_file(path, key)
    path.chmod(0o644)
    with pytest.raises(KeyFileError) as caught:
        load_signing_key(path)
    assert key.private_bytes().hex()[:16] not in str(caught.value)


def test_trust_store_round_trip(tmp_path: Path) -> None:
    keys = [CompositeSigningKey.generate().public_key() for _ in range(2)]
    store = TrustStore(keys, {keys[0].fingerprint(): "release-signer"})
    store.save(tmp_path / "trust.json")
    loaded = TrustStore.load(tmp_path / "trust.json")
    assert len(loaded) == 2
    assert all(loaded.get(key.fingerprint()) == key for key in keys)
    assert loaded.label(keys[0].fingerprint()) == "release-signer"
    assert loaded.get("00" * 32) is None


def test_trust_store_with_mismatched_key_id_is_refused(tmp_path: Path) -> None:
    store = TrustStore([CompositeSigningKey.generate().public_key()])
    document = store.to_json()
    document["keys"][0]["key_id"] = CompositeSigningKey.generate().public_key().fingerprint()
    (tmp_path / "trust.json").write_text(json.dumps(document))
    with pytest.raises(TrustStoreError, match="does not match"):
        TrustStore.load(tmp_path / "trust.json")


@pytest.mark.parametrize(
    "document",
    [{}, {"format": "other"}, {"format": "tensorguard-trust-store", "version": 1, "keys": [{}]}],
)
def test_malformed_trust_store_is_refused(tmp_path: Path, document: dict[str, object]) -> None:
    (tmp_path / "trust.json").write_text(json.dumps(document))
    with pytest.raises(TrustStoreError):
        TrustStore.load(tmp_path / "trust.json")
