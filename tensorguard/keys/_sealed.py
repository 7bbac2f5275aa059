"""Sealed key records on disk: AES-256-GCM bodies keyed by a provider's key manager.

The store owns the record format, the AEAD and the files; a provider only supplies a
:class:`RecordKeyManager` that creates and recovers one 256-bit key per record (derived
from ``TG_KEY_MASTER`` for files, wrapped by a token-held AES key for PKCS#11).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tensorguard.keys._errors import KeyIntegrityError, KeyRecordFormatError
from tensorguard.keys._keydir import KeyDirectory
from tensorguard.keys._names import KeyPurpose, validate_key_name
from tensorguard.keys._provider import KeyInfo
from tensorguard.keys._record import NONCE_BYTES, RecordHeader, SealValue, parse_record


@dataclass(frozen=True)
class OpenedRecord:
    """An authenticated record: its header and its decrypted secret."""

    header: RecordHeader
    secret: bytes = field(repr=False)


class RecordKeyManager(Protocol):
    """Creates and recovers the per-record AES-256 key of one provider."""

    @property
    def provider_kind(self) -> str:
        """Short provider name written into every record (``file``, ``pkcs11``)."""
        ...

    def new_record_key(self, name: str, purpose: KeyPurpose) -> tuple[dict[str, SealValue], bytes]:
        """A fresh record key and the non-secret parameters that recover it."""
        ...

    def open_record_key(self, header: RecordHeader) -> bytes:
        """Recover the record key from an (unauthenticated) header, or raise."""
        ...


class SealedRecordStore:
    """Reads and writes sealed key records in a :class:`KeyDirectory`."""

    def __init__(self, directory: KeyDirectory, keys: RecordKeyManager) -> None:
        self.directory = directory
        self._keys = keys

    def __repr__(self) -> str:
        return f"SealedRecordStore({self.directory!r}, provider={self._keys.provider_kind!r})"

    def seal(
        self,
        name: str,
        purpose: KeyPurpose,
        secret: bytes,
        *,
        replace: bool,
        attributes: Mapping[str, str] | None = None,
    ) -> Path:
        """Encrypt ``secret`` as key ``name`` for ``purpose`` and write it atomically.

        ``attributes`` are public facts authenticated together with the secret.
        """
        validate_key_name(name)
        if not replace:
            self.directory.require_absent(name, purpose)
        seal_params, key = self._keys.new_record_key(name, purpose)
        header = RecordHeader(
            name=name,
            purpose=purpose,
            provider=self._keys.provider_kind,
            nonce=os.urandom(NONCE_BYTES),
            seal=seal_params,
            attributes=dict(attributes or {}),
        )
        prefix = header.record_prefix()
        body = AESGCM(key).encrypt(header.nonce, secret, prefix)
        return self.directory.write(name, purpose, prefix + body, replace=replace)

    def open(self, name: str, purpose: KeyPurpose) -> bytes:
        """Read, authenticate and decrypt the secret of key ``name`` for ``purpose``."""
        return self.open_record(name, purpose).secret

    def open_record(self, name: str, purpose: KeyPurpose) -> OpenedRecord:
        """Read, authenticate and decrypt a record; its header is trustworthy afterwards."""
        validate_key_name(name)
        path = self.directory.record_path(name, purpose)
        parsed = parse_record(self.directory.read(name, purpose))
        header = parsed.header
        if header.name != name or header.purpose is not purpose:
            raise KeyIntegrityError(
                f"key file {path} holds key {header.name!r} ({header.purpose.value}), not "
                f"{name!r} ({purpose.value}): it was renamed or copied; restore the right file"
            )
        if header.provider != self._keys.provider_kind:
            raise KeyRecordFormatError(
                f"key file {path} was sealed by the {header.provider!r} provider, not "
                f"{self._keys.provider_kind!r}; select that provider with TG_KEY_PROVIDER"
            )
        key = self._keys.open_record_key(header)
        try:
            secret = AESGCM(key).decrypt(header.nonce, parsed.ciphertext, parsed.associated_data)
        except InvalidTag:
            raise KeyIntegrityError(
                f"key file {path} failed authentication: its header or ciphertext was altered "
                "or truncated; restore it from backup"
            ) from None
        return OpenedRecord(header=header, secret=secret)

    def exists(self, name: str, purpose: KeyPurpose) -> bool:
        """True when a record for (name, purpose) exists (not authenticated)."""
        return self.directory.exists(validate_key_name(name), purpose)

    def list(self) -> list[KeyInfo]:
        """Describe every record from its header (headers are not authenticated here)."""
        infos: list[KeyInfo] = []
        for path in self.directory.record_files():
            header = parse_record(self.directory.read_file(path)).header
            infos.append(
                KeyInfo(
                    name=header.name,
                    purpose=header.purpose,
                    provider=header.provider,
                    created_at=header.created_at,
                    location=str(path),
                )
            )
        return infos
