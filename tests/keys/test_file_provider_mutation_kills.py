"""FileKeyProvider details that the mutation run on keys/_file_provider.py found unchecked
(#18 item 6): the scrypt costs a record may carry, the production default, the refusal
texts, the repr, the log lines and the attributes that survive a master rotation.

Real files in temporary directories; scrypt costs stay at or just above the default so
each test takes well under a second.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from tensorguard.keys import (
    FileKeyProvider,
    KeyPurpose,
    KeyRecordFormatError,
    MasterSecret,
    WrongMasterKeyError,
)
from tensorguard.keys._errors import KeyProviderProductionError
from tensorguard.keys._master import ScryptParameters
from tensorguard.keys._record import parse_record

RANGE = (
    "(N a power of two, from ScryptParameters(n=32768, r=8, p=1) to "
    "ScryptParameters(n=1048576, r=8, p=4))"
)


def _master(text: str) -> MasterSecret:
    return MasterSecret.from_text(text, production=False)


def _provider(key_dir: Path, master_text: str, **kwargs: Any) -> FileKeyProvider:
    return FileKeyProvider(key_dir, _master(master_text), production=False, **kwargs)


def _rewrite_seal(provider: FileKeyProvider, name: str, **changes: str | int) -> None:
    """Give the stored GENERIC record ``name`` another seal, keeping its ciphertext."""
    path = provider.records.directory.record_path(name, KeyPurpose.GENERIC)
    parsed = parse_record(path.read_bytes())
    header = dataclasses.replace(parsed.header, seal={**parsed.header.seal, **changes})
    path.write_bytes(header.record_prefix() + parsed.ciphertext)


@pytest.mark.parametrize(
    ("n", "r", "p"),
    [
        (2**14, 8, 1),  # below the default
        (2**21, 8, 1),  # above the ceiling
        (3 * 2**14, 8, 1),  # inside the range, not a power of two
        (2**15 + 1, 8, 1),  # odd
        (2**15, 7, 1),
        (2**15, 9, 1),
        (2**15, 8, 5),
    ],
)
def test_scrypt_costs_outside_the_range_are_refused_before_any_derivation(
    key_dir: Path, master_text: str, n: int, r: int, p: int
) -> None:
    provider = _provider(key_dir, master_text)
    provider.store_secret("blob", KeyPurpose.GENERIC, b"secret")
    _rewrite_seal(provider, "blob", scrypt_n=n, scrypt_r=r, scrypt_p=p)
    with pytest.raises(KeyRecordFormatError) as refused:
        provider.load_secret("blob", KeyPurpose.GENERIC)
    assert str(refused.value) == (
        f"key record 'blob' has scrypt costs (N={n}, r={r}, p={p}) outside the accepted "
        f"range {RANGE}"
    )


@pytest.mark.parametrize("scrypt", [ScryptParameters(n=2**16), ScryptParameters(p=2)])
def test_a_record_sealed_at_a_higher_cost_opens_with_its_own_costs(
    key_dir: Path, master_text: str, scrypt: ScryptParameters
) -> None:
    """The reader derives with the costs the record names (N and p), not its own."""
    writer = _provider(key_dir, master_text, scrypt=scrypt)
    writer.store_secret("blob", KeyPurpose.GENERIC, b"costly")
    path = writer.records.directory.record_path("blob", KeyPurpose.GENERIC)
    seal = parse_record(path.read_bytes()).header.seal
    assert (seal["scrypt_n"], seal["scrypt_r"], seal["scrypt_p"]) == (scrypt.n, 8, scrypt.p)
    reader = _provider(key_dir, master_text)
    assert reader.load_secret("blob", KeyPurpose.GENERIC) == b"costly"


def test_a_wrong_master_is_named_with_the_key_and_how_to_fix_it(
    key_dir: Path, master_text: str
) -> None:
    _provider(key_dir, master_text).store_secret("blob", KeyPurpose.GENERIC, b"x")
    with pytest.raises(WrongMasterKeyError) as refused:
        _provider(key_dir, master_text + "-other").load_secret("blob", KeyPurpose.GENERIC)
    assert str(refused.value) == (
        "key 'blob' (generic-secret) was sealed under a different TG_KEY_MASTER (or its "
        "key-derivation parameters were altered): set TG_KEY_MASTER to the master secret "
        "in force when the key was written"
    )


def test_a_throwaway_master_is_refused_when_the_environment_says_production(
    key_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``production=None`` means TG_ENVIRONMENT; the refusal comes before any file."""
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    with pytest.raises(KeyProviderProductionError) as refused:
        FileKeyProvider(key_dir, MasterSecret.throwaway())
    assert str(refused.value) == (
        "a throwaway master secret is never used in production: set TG_KEY_MASTER"
    )
    assert not key_dir.exists()
    explicit = FileKeyProvider(key_dir, MasterSecret.throwaway(), production=False)
    assert explicit.production is False


def test_production_defaults_to_the_environment(
    key_dir: Path, master_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    assert FileKeyProvider(key_dir, _master(master_text)).production is True
    monkeypatch.setenv("TG_ENVIRONMENT", "development")
    assert FileKeyProvider(key_dir, _master(master_text)).production is False


def test_the_costs_given_to_the_provider_are_the_ones_written(
    key_dir: Path, master_text: str
) -> None:
    provider = _provider(key_dir, master_text, scrypt=ScryptParameters(n=2**16))
    provider.store_secret("blob", KeyPurpose.GENERIC, b"x")
    path = provider.records.directory.record_path("blob", KeyPurpose.GENERIC)
    assert parse_record(path.read_bytes()).header.seal["scrypt_n"] == 2**16


def test_the_repr_names_the_directory_only(key_dir: Path, master_text: str) -> None:
    provider = _provider(key_dir, master_text)
    assert repr(provider) == f"FileKeyProvider(key_dir={str(key_dir)!r})"
    assert master_text not in repr(provider)


def test_generating_a_signing_key_logs_its_name_fingerprint_and_directory(
    file_provider: FileKeyProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tensorguard.keys._file_provider"):
        signer = file_provider.generate_signing_key("release")
    fingerprint = signer.public_key().fingerprint()
    directory = file_provider.records.directory.path
    assert caplog.messages == [
        f"generated composite signing key 'release' (fingerprint {fingerprint}) in {directory}"
    ]


def test_rotation_keeps_each_records_attributes_and_logs_the_count(
    file_provider: FileKeyProvider,
    tmp_path: Path,
    master_text: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    file_provider.records.seal(
        "tagged", KeyPurpose.GENERIC, b"payload", replace=False, attributes={"origin": "site-a"}
    )
    file_provider.store_secret("plain", KeyPurpose.KEM, bytes(32))
    target = _provider(tmp_path / "rotated", master_text[::-1] + "-rotated")
    with caplog.at_level(logging.INFO, logger="tensorguard.keys._file_provider"):
        written = file_provider.reseal_into(target)
    assert written == ["plain.xwing-kem.tgkey", "tagged.generic-secret.tgkey"]
    opened = target.records.open_record("tagged", KeyPurpose.GENERIC)
    assert opened.secret == b"payload"
    assert dict(opened.header.attributes) == {"origin": "site-a"}
    assert caplog.messages == [
        f"resealed 2 key(s) from {file_provider.records.directory.path} into "
        f"{target.records.directory.path}"
    ]
