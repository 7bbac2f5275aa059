"""The provider interface's shared behaviour on a real FileKeyProvider (#18 item 6: the
mutation runs on keys/_provider.py, _sealed_provider.py and _closing.py found these
unchecked): signer_for's choices, the raw-bytes refusals word for word, the log lines,
the context manager."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tensorguard.keys import (
    FileKeyProvider,
    InvalidKeyNameError,
    KeyNotFoundError,
    KeyProviderError,
    KeyProviderProductionError,
    KeyPurpose,
    MasterSecret,
)
from tensorguard.keys._closing import Closeable


def _provider(key_dir: Path, master_text: str, *, production: bool = False) -> FileKeyProvider:
    master = MasterSecret.from_text(master_text, production=False)
    return FileKeyProvider(key_dir, master, production=production)


class _RacedProvider(FileKeyProvider):
    """A provider that another process beats to creating a key: between its own
    ``has_key`` (which finds nothing) and its ``generate_signing_key``, the other
    process, a second real provider on the same directory, writes the key."""

    rival: FileKeyProvider

    def has_key(self, name: str, purpose: KeyPurpose) -> bool:
        present = super().has_key(name, purpose)
        if not present:
            self.rival.generate_signing_key(name)
        return present


def test_signer_for_returns_an_existing_key_without_generating(
    file_provider: FileKeyProvider, caplog: pytest.LogCaptureFixture
) -> None:
    first = file_provider.generate_signing_key("release")
    with caplog.at_level(logging.WARNING, logger="tensorguard.keys"):
        again = file_provider.signer_for("release", generate_if_missing=True)
    assert again.public_key() == first.public_key()
    assert caplog.messages == []


def test_signer_for_in_production_refuses_in_full_and_creates_nothing(
    key_dir: Path, master_text: str
) -> None:
    provider = _provider(key_dir, master_text, production=True)
    with pytest.raises(KeyProviderProductionError) as refused:
        provider.signer_for("release", generate_if_missing=True)
    assert str(refused.value) == (
        "signing key 'release' does not exist and production never creates keys implicitly: "
        "create it once with `tensorguard keys generate --name release` and pin its "
        "fingerprint in the trust store"
    )
    assert provider.list_keys() == []
    with pytest.raises(KeyNotFoundError):
        provider.signer_for("release")


def test_signer_for_warns_with_the_new_keys_fingerprint(
    file_provider: FileKeyProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="tensorguard.keys._provider"):
        signer = file_provider.signer_for("release", generate_if_missing=True)
    fingerprint = signer.public_key().fingerprint()
    assert caplog.messages == [
        f"DEVELOPMENT ONLY: signing key 'release' did not exist and was generated on the fly "
        f"(fingerprint {fingerprint}); production refuses this"
    ]
    assert file_provider.fingerprint("release") == fingerprint


def test_signer_for_uses_the_key_another_process_created_first(
    key_dir: Path, master_text: str, caplog: pytest.LogCaptureFixture
) -> None:
    raced = _RacedProvider(key_dir, MasterSecret.from_text(master_text, production=False))
    raced.rival = _provider(key_dir, master_text)
    with caplog.at_level(logging.WARNING, logger="tensorguard.keys._provider"):
        signer = raced.signer_for("release", generate_if_missing=True)
    assert signer.public_key() == raced.rival.public_key("release")
    assert caplog.messages == []  # nothing was generated here


def test_a_kem_key_is_stored_under_the_kem_purpose_and_logged(
    file_provider: FileKeyProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tensorguard.keys._provider"):
        public = file_provider.generate_kem_key("recipient")
    assert caplog.messages == [
        f"generated X-Wing key 'recipient' (fingerprint {public.fingerprint()}) with the "
        "file provider"
    ]
    assert file_provider.has_key("recipient", KeyPurpose.KEM)
    assert not file_provider.has_key("recipient", KeyPurpose.GENERIC)
    seed = file_provider.load_secret("recipient", KeyPurpose.KEM)
    assert len(seed) == 32
    assert file_provider.kem_private_key("recipient").public_key() == public


def test_storing_a_secret_is_logged_without_it(
    file_provider: FileKeyProvider, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="tensorguard.keys._sealed_provider"):
        file_provider.store_secret("ckks", KeyPurpose.CKKS_SECRET, b"context bytes")
    assert caplog.messages == ["stored ckks-secret-context key 'ckks' with the file provider"]


@pytest.mark.parametrize(
    ("verb", "call"),
    [
        ("stored", lambda p: p.store_secret("k", KeyPurpose.SIGNING, b"x" * 64)),
        ("loaded", lambda p: p.load_secret("k", KeyPurpose.SIGNING)),
    ],
)
def test_signing_keys_never_pass_as_raw_bytes(
    file_provider: FileKeyProvider, verb: str, call: Callable[[FileKeyProvider], object]
) -> None:
    file_provider.generate_signing_key("k")
    with pytest.raises(KeyProviderError) as refused:
        call(file_provider)
    assert type(refused.value) is KeyProviderError
    assert str(refused.value) == (
        f"signing keys are not {verb} as raw bytes: use generate_signing_key() to create "
        "one and signer() to use it"
    )


def test_has_key_checks_the_name(file_provider: FileKeyProvider) -> None:
    with pytest.raises(InvalidKeyNameError):
        file_provider.has_key("../escape", KeyPurpose.GENERIC)


def test_replace_reaches_the_store(file_provider: FileKeyProvider) -> None:
    file_provider.store_secret("k", KeyPurpose.GENERIC, b"one")
    file_provider.store_secret("k", KeyPurpose.GENERIC, b"two", replace=True)
    assert file_provider.load_secret("k", KeyPurpose.GENERIC) == b"two"


class _Counted(Closeable):
    def __init__(self) -> None:
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_a_closeable_is_its_own_context_and_closes_on_exit_and_on_error() -> None:
    counted = _Counted()
    with counted as entered:
        assert entered is counted
        assert counted.closed == 0
    assert counted.closed == 1
    with pytest.raises(RuntimeError, match="boom"), counted:
        raise RuntimeError("boom")
    assert counted.closed == 2


def test_a_provider_is_a_context_manager(key_dir: Path, master_text: str) -> None:
    provider = _provider(key_dir, master_text)
    with provider as entered:
        assert entered is provider
