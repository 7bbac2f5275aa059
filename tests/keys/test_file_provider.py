"""FileKeyProvider: sealing round trips, authentication failures, permissions, refusals."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest

from tensorguard.crypto._composite import CompositeVerifyKey
from tensorguard.crypto._errors import SignatureError
from tensorguard.keys import (
    FileKeyProvider,
    InvalidKeyNameError,
    KeyExistsError,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProviderConfigError,
    KeyProviderError,
    KeyProviderProductionError,
    KeyPurpose,
    KeyRecordFormatError,
    MasterSecret,
    WrongMasterKeyError,
)


def _provider(key_dir: Path, master: str) -> FileKeyProvider:
    return FileKeyProvider(
        key_dir, MasterSecret.from_text(master, production=False), production=False
    )


@pytest.mark.parametrize("purpose", [KeyPurpose.KEM, KeyPurpose.CKKS_SECRET, KeyPurpose.GENERIC])
@pytest.mark.parametrize("size", [0, 1, 32, 1 << 20])
def test_secret_round_trip_across_provider_instances(
    key_dir: Path, master_text: str, purpose: KeyPurpose, size: int
) -> None:
    secret = os.urandom(size)
    _provider(key_dir, master_text).store_secret("site-a", purpose, secret)
    assert _provider(key_dir, master_text).load_secret("site-a", purpose) == secret


def test_signing_key_round_trip_verifies(key_dir: Path, master_text: str) -> None:
    signer = _provider(key_dir, master_text).generate_signing_key("release")
    signature = signer.sign(b"adapter manifest", b"tgsp")
    reopened = _provider(key_dir, master_text)
    public = CompositeVerifyKey.from_public_bytes(reopened.public_key("release").public_bytes())
    public.verify(b"adapter manifest", signature, b"tgsp")
    assert reopened.fingerprint("release") == signer.public_key().fingerprint()
    with pytest.raises(SignatureError):
        public.verify(b"adapter manifest!", signature, b"tgsp")


def test_kem_key_round_trip(file_provider: FileKeyProvider) -> None:
    public = file_provider.generate_kem_key("recipient-1")
    assert file_provider.kem_private_key("recipient-1").public_key() == public


def test_wrong_master_is_reported_as_such(key_dir: Path, master_text: str) -> None:
    _provider(key_dir, master_text).store_secret("ckks", KeyPurpose.CKKS_SECRET, b"s" * 64)
    _provider(key_dir, master_text).generate_signing_key("release")
    other = _provider(key_dir, master_text + "x")
    with pytest.raises(WrongMasterKeyError, match="TG_KEY_MASTER"):
        other.load_secret("ckks", KeyPurpose.CKKS_SECRET)
    with pytest.raises(WrongMasterKeyError):
        other.signer("release")


def test_every_single_byte_flip_is_rejected(file_provider: FileKeyProvider) -> None:
    file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"secret context bytes")
    path = file_provider.records.directory.record_path("ckks", KeyPurpose.CKKS_SECRET)
    original = path.read_bytes()
    for position in range(len(original)):
        tampered = bytearray(original)
        tampered[position] ^= 0x01
        path.write_bytes(bytes(tampered))
        with pytest.raises(KeyIntegrityError):
            file_provider.load_secret("ckks", KeyPurpose.CKKS_SECRET)
    path.write_bytes(original)
    assert file_provider.load_secret("ckks", KeyPurpose.CKKS_SECRET) == b"secret context bytes"


def test_every_truncation_and_extension_is_rejected(file_provider: FileKeyProvider) -> None:
    file_provider.store_secret("blob", KeyPurpose.GENERIC, b"0123456789abcdef")
    path = file_provider.records.directory.record_path("blob", KeyPurpose.GENERIC)
    original = path.read_bytes()
    for length in range(len(original)):
        path.write_bytes(original[:length])
        with pytest.raises(KeyIntegrityError):
            file_provider.load_secret("blob", KeyPurpose.GENERIC)
    path.write_bytes(original + b"\x00")
    with pytest.raises(KeyIntegrityError):
        file_provider.load_secret("blob", KeyPurpose.GENERIC)


def test_record_moved_to_another_name_or_purpose_is_rejected(
    file_provider: FileKeyProvider,
) -> None:
    directory = file_provider.records.directory
    file_provider.store_secret("alice", KeyPurpose.KEM, os.urandom(32))
    source = directory.record_path("alice", KeyPurpose.KEM).read_bytes()
    for name, purpose in (("bob", KeyPurpose.KEM), ("alice", KeyPurpose.GENERIC)):
        target = directory.record_path(name, purpose)
        target.write_bytes(source)
        target.chmod(0o600)
        with pytest.raises(KeyIntegrityError, match="renamed or copied"):
            file_provider.load_secret(name, purpose)


def test_permissions_are_private(file_provider: FileKeyProvider) -> None:
    file_provider.generate_signing_key("release")
    file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"x")
    directory = file_provider.records.directory.path
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    files = list(directory.iterdir())
    assert len(files) == 2  # no temporary files left behind
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_loose_permissions_and_symlinks_are_refused(
    file_provider: FileKeyProvider, tmp_path: Path, master_text: str
) -> None:
    file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"x")
    path = file_provider.records.directory.record_path("ckks", KeyPurpose.CKKS_SECRET)
    path.chmod(0o644)
    with pytest.raises(KeyProviderConfigError, match="chmod 600"):
        file_provider.load_secret("ckks", KeyPurpose.CKKS_SECRET)
    path.chmod(0o600)
    link = file_provider.records.directory.record_path("link", KeyPurpose.CKKS_SECRET)
    link.symlink_to(path)
    with pytest.raises(KeyProviderConfigError, match="symbolic links"):
        file_provider.load_secret("link", KeyPurpose.CKKS_SECRET)
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(KeyProviderConfigError, match="chmod 700"):
        _provider(shared, master_text)


def test_existing_keys_are_never_overwritten_implicitly(file_provider: FileKeyProvider) -> None:
    first = file_provider.generate_signing_key("release").public_key()
    with pytest.raises(KeyExistsError):
        file_provider.generate_signing_key("release")
    assert file_provider.public_key("release") == first
    file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"one")
    with pytest.raises(KeyExistsError):
        file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"two")
    file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"two", replace=True)
    assert file_provider.load_secret("ckks", KeyPurpose.CKKS_SECRET) == b"two"


def test_missing_keys_and_bad_names(file_provider: FileKeyProvider) -> None:
    with pytest.raises(KeyNotFoundError, match="tensorguard keys generate"):
        file_provider.signer("absent")
    with pytest.raises(KeyNotFoundError):
        file_provider.load_secret("absent", KeyPurpose.KEM)
    for bad in ("", "../etc", "Upper", ".hidden", "a/b", "x" * 64):
        with pytest.raises(InvalidKeyNameError):
            file_provider.store_secret(bad, KeyPurpose.GENERIC, b"x")


def test_signing_keys_are_not_exported_or_imported_as_bytes(
    file_provider: FileKeyProvider,
) -> None:
    file_provider.generate_signing_key("release")
    with pytest.raises(KeyProviderError, match="not loaded as raw bytes"):
        file_provider.load_secret("release", KeyPurpose.SIGNING)
    with pytest.raises(KeyProviderError, match="not stored as raw bytes"):
        file_provider.store_secret("other", KeyPurpose.SIGNING, os.urandom(64))


def test_list_keys_describes_records(file_provider: FileKeyProvider) -> None:
    file_provider.generate_signing_key("release")
    file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"x")
    listed = {(info.name, info.purpose, info.provider) for info in file_provider.list_keys()}
    assert listed == {
        ("release", KeyPurpose.SIGNING, "file"),
        ("ckks", KeyPurpose.CKKS_SECRET, "file"),
    }


def test_foreign_file_is_a_format_error(file_provider: FileKeyProvider) -> None:
    path = file_provider.records.directory.record_path("junk", KeyPurpose.GENERIC)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n" + b"A" * 64)
    path.chmod(0o600)
    with pytest.raises(KeyRecordFormatError, match="magic"):
        file_provider.load_secret("junk", KeyPurpose.GENERIC)


def test_generate_if_missing_only_in_development(
    key_dir: Path, master_text: str, caplog: pytest.LogCaptureFixture
) -> None:
    production = FileKeyProvider(
        key_dir, MasterSecret.from_text(master_text, production=True), production=True
    )
    with pytest.raises(KeyProviderProductionError, match="never creates keys implicitly"):
        production.signer_for("release", generate_if_missing=True)
    assert not production.has_key("release", KeyPurpose.SIGNING)
    development = _provider(key_dir, master_text)
    with pytest.raises(KeyNotFoundError):
        development.signer_for("release")
    with caplog.at_level(logging.WARNING, logger="tensorguard.keys"):
        signer = development.signer_for("release", generate_if_missing=True)
    assert "DEVELOPMENT ONLY" in caplog.text
    assert production.signer_for("release").public_key() == signer.public_key()


def test_secrets_stay_out_of_repr_logs_and_errors(
    key_dir: Path, master_text: str, caplog: pytest.LogCaptureFixture
) -> None:
    secret = os.urandom(32)
    with caplog.at_level(logging.DEBUG):
        provider = _provider(key_dir, master_text)
        provider.store_secret("kem", KeyPurpose.KEM, secret)
        provider.generate_signing_key("release")
        with pytest.raises(WrongMasterKeyError) as wrong:
            _provider(key_dir, master_text[::-1]).load_secret("kem", KeyPurpose.KEM)
    private_bytes = provider.records.open("release", KeyPurpose.SIGNING)
    texts = [
        caplog.text,
        repr(provider),
        repr(MasterSecret.from_text(master_text, production=False)),
        repr(provider.records),
        str(wrong.value),
    ]
    for text in texts:
        assert master_text not in text
        assert master_text[::-1] not in text
        for blob in (secret, private_bytes):
            assert blob.hex() not in text
    assert "generated composite signing key 'release'" in caplog.text


def test_key_material_never_rests_in_the_clear(file_provider: FileKeyProvider) -> None:
    signer = file_provider.generate_signing_key("release")
    kem_public = file_provider.generate_kem_key("recipient")
    private_bytes = file_provider.records.open("release", KeyPurpose.SIGNING)
    kem_seed = file_provider.load_secret("recipient", KeyPurpose.KEM)
    assert len(private_bytes) == 64
    assert signer.public_key().fingerprint() == file_provider.fingerprint("release")
    assert kem_public == file_provider.kem_private_key("recipient").public_key()
    on_disk = b"".join(p.read_bytes() for p in file_provider.records.directory.path.iterdir())
    for needle in (private_bytes, private_bytes[:32], private_bytes[32:], kem_seed):
        for encoding in (needle, needle.hex().encode()):
            assert encoding not in on_disk


def test_master_rotation_reseals_every_key(
    file_provider: FileKeyProvider, tmp_path: Path, master_text: str
) -> None:
    fingerprint = file_provider.generate_signing_key("release").public_key().fingerprint()
    file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"context")
    new_master = master_text[::-1] + "rotated"
    rotated = _provider(tmp_path / "rotated", new_master)
    written = file_provider.reseal_into(rotated)
    assert sorted(written) == ["ckks.ckks-secret-context.tgkey", "release.composite-signing.tgkey"]
    reopened = _provider(tmp_path / "rotated", new_master)
    assert reopened.fingerprint("release") == fingerprint
    assert reopened.load_secret("ckks", KeyPurpose.CKKS_SECRET) == b"context"
    with pytest.raises(WrongMasterKeyError):
        _provider(tmp_path / "rotated", master_text).load_secret("ckks", KeyPurpose.CKKS_SECRET)
    with pytest.raises(KeyExistsError):
        file_provider.reseal_into(rotated)
