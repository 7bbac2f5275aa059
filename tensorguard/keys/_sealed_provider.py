"""Shared behaviour of the providers that keep sealed key records in a directory."""

from __future__ import annotations

import logging

from tensorguard.keys._errors import KeyProviderError
from tensorguard.keys._names import KeyPurpose, validate_key_name
from tensorguard.keys._provider import KeyInfo, KeyProvider
from tensorguard.keys._sealed import SealedRecordStore

LOGGER = logging.getLogger(__name__)


class SealedKeyProvider(KeyProvider):
    """A provider whose secrets live as sealed records in a :class:`SealedRecordStore`."""

    def __init__(self, records: SealedRecordStore, *, production: bool) -> None:
        super().__init__(production=production)
        self.records = records

    def store_secret(
        self, name: str, purpose: KeyPurpose, secret: bytes, *, replace: bool = False
    ) -> None:
        """Seal ``secret`` under ``name`` for ``purpose``; refuse to overwrite unless asked."""
        _refuse_signing_purpose(purpose, "stored")
        self.records.seal(name, purpose, secret, replace=replace)
        LOGGER.info("stored %s key %r with the %s provider", purpose.value, name, self.kind)

    def load_secret(self, name: str, purpose: KeyPurpose) -> bytes:
        """Return the secret stored under ``name`` for ``purpose``, authenticated."""
        _refuse_signing_purpose(purpose, "loaded")
        return self.records.open(name, purpose)

    def has_key(self, name: str, purpose: KeyPurpose) -> bool:
        """True when a sealed record of that name and purpose exists."""
        return self.records.exists(validate_key_name(name), purpose)

    def list_keys(self) -> list[KeyInfo]:
        """Every sealed record, described from its (unauthenticated) header."""
        return self.records.list()


def _refuse_signing_purpose(purpose: KeyPurpose, verb: str) -> None:
    if purpose is KeyPurpose.SIGNING:
        raise KeyProviderError(
            f"signing keys are not {verb} as raw bytes: use generate_signing_key() to "
            "create one and signer() to use it"
        )
