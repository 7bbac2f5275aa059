"""FileKeyProvider: keys sealed with AES-256-GCM under a key derived from TG_KEY_MASTER.

Each record's key is HKDF-SHA256(scrypt(master, salt), record_salt) (see
:mod:`tensorguard.keys._master` for why scrypt); the record header, including the key
name and purpose, is the GCM associated data. Files are 0600 in a 0700 directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from tensorguard.codec import StrictModel
from tensorguard.crypto import CompositeSigner, CompositeSigningKey
from tensorguard.keys._errors import (
    KeyProviderProductionError,
    KeyRecordFormatError,
    WrongMasterKeyError,
)
from tensorguard.keys._keydir import KeyDirectory
from tensorguard.keys._master import (
    DEFAULT_SCRYPT,
    MASTER_ENV,
    MAX_SCRYPT,
    MasterSecret,
    ScryptParameters,
    key_check_matches,
    key_check_value,
    master_secret_from_env,
    record_key,
)
from tensorguard.keys._names import KeyPurpose
from tensorguard.keys._record import (
    Base64Bytes,
    RecordHeader,
    SealValue,
    b64encode,
    parse_seal,
)
from tensorguard.keys._sealed import SealedRecordStore
from tensorguard.keys._sealed_provider import SealedKeyProvider
from tensorguard.production import is_production

LOGGER = logging.getLogger(__name__)

SCRYPT_SALT_BYTES = 16
RECORD_SALT_BYTES = 32
ScryptCost = Annotated[int, Field(ge=1)]


class _FileSeal(StrictModel):
    """The ``seal`` of a record written by :class:`MasterKeyRecordKeys`."""

    kdf: Literal["scrypt+hkdf-sha256"]
    scrypt_n: ScryptCost
    scrypt_r: ScryptCost
    scrypt_p: ScryptCost
    scrypt_salt: Base64Bytes
    key_check: Base64Bytes
    record_salt: Base64Bytes


class MasterKeyRecordKeys:
    """Per-record keys derived from the master secret (a :class:`RecordKeyManager`)."""

    provider_kind = "file"

    def __init__(self, master: MasterSecret, scrypt: ScryptParameters = DEFAULT_SCRYPT) -> None:
        self._master = master
        self._scrypt = scrypt
        self._salt = os.urandom(SCRYPT_SALT_BYTES)

    def __repr__(self) -> str:
        return f"MasterKeyRecordKeys({self._master!r})"

    def new_record_key(self, name: str, purpose: KeyPurpose) -> tuple[dict[str, SealValue], bytes]:
        """A fresh record salt and the key derived from it under this process's KEK."""
        del name, purpose  # bound by the record's associated data, not the key
        kek = self._master.key_encryption_key(self._salt, self._scrypt)
        record_salt = os.urandom(RECORD_SALT_BYTES)
        params: dict[str, SealValue] = {
            "kdf": "scrypt+hkdf-sha256",
            "scrypt_n": self._scrypt.n,
            "scrypt_r": self._scrypt.r,
            "scrypt_p": self._scrypt.p,
            "scrypt_salt": b64encode(self._salt),
            "key_check": b64encode(key_check_value(kek)),
            "record_salt": b64encode(record_salt),
        }
        return params, record_key(kek, record_salt)

    def open_record_key(self, header: RecordHeader) -> bytes:
        """Re-derive the record key; a key-check mismatch means a different master."""
        seal = parse_seal(_FileSeal, header, self.provider_kind)
        n, r, p = seal.scrypt_n, seal.scrypt_r, seal.scrypt_p
        params = ScryptParameters(n=n, r=r, p=p)
        if not params.is_within(DEFAULT_SCRYPT, MAX_SCRYPT) or n & (n - 1):
            raise KeyRecordFormatError(
                f"key record {header.name!r} has scrypt costs (N={n}, r={r}, p={p}) outside "
                f"the accepted range (N a power of two, from {DEFAULT_SCRYPT} to {MAX_SCRYPT})"
            )
        kek = self._master.key_encryption_key(seal.scrypt_salt, params)
        if not key_check_matches(kek, seal.key_check):
            raise WrongMasterKeyError(
                f"key {header.name!r} ({header.purpose.value}) was sealed under a different "
                f"{MASTER_ENV} (or its key-derivation parameters were altered): set "
                f"{MASTER_ENV} to the master secret in force when the key was written"
            )
        return record_key(kek, seal.record_salt)


class FileKeyProvider(SealedKeyProvider):
    """Keys as AES-256-GCM sealed files (0600) in a private directory (0700)."""

    kind = "file"

    def __init__(
        self,
        key_dir: Path | str,
        master: MasterSecret,
        *,
        production: bool | None = None,
        scrypt: ScryptParameters = DEFAULT_SCRYPT,
    ) -> None:
        """Use ``key_dir`` for records sealed under ``master``.

        ``production`` defaults to ``TG_ENVIRONMENT``; a throwaway (ephemeral) master is
        refused in production.
        """
        production = is_production() if production is None else production
        if production and master.ephemeral:
            raise KeyProviderProductionError(
                f"a throwaway master secret is never used in production: set {MASTER_ENV}"
            )
        directory = KeyDirectory(key_dir)
        directory.ensure()
        records = SealedRecordStore(directory, MasterKeyRecordKeys(master, scrypt))
        super().__init__(records, production=production)

    @classmethod
    def from_env(
        cls,
        key_dir: Path | str,
        environ: Mapping[str, str] | None = None,
        *,
        allow_ephemeral: bool | None = None,
    ) -> FileKeyProvider:
        """Build the provider from ``TG_KEY_MASTER`` (see :func:`master_secret_from_env`)."""
        master = master_secret_from_env(environ, allow_ephemeral=allow_ephemeral)
        return cls(key_dir, master, production=is_production(environ))

    def __repr__(self) -> str:
        return f"FileKeyProvider(key_dir={str(self.records.directory.path)!r})"

    def generate_signing_key(self, name: str) -> CompositeSigner:
        """Generate a composite key and seal its 64-byte private encoding as ``name``."""
        key = CompositeSigningKey.generate()
        self.records.seal(name, KeyPurpose.SIGNING, key.private_bytes(), replace=False)
        LOGGER.info(
            "generated composite signing key %r (fingerprint %s) in %s",
            name,
            key.public_key().fingerprint(),
            self.records.directory.path,
        )
        return key

    def signer(self, name: str) -> CompositeSigner:
        """Unseal signing key ``name`` and return it as a signer."""
        return CompositeSigningKey.from_private_bytes(self.records.open(name, KeyPurpose.SIGNING))

    def reseal_into(self, target: FileKeyProvider) -> list[str]:
        """Copy every key into ``target`` (another directory and master): master rotation.

        Each record is authenticated and decrypted here, then sealed afresh under the
        target's master; nothing is overwritten. Returns the file names written. Point
        ``TG_KEY_DIR`` and ``TG_KEY_MASTER`` at the target together, then retire this
        directory once the target is verified (docs/KEYS.md, "Rotation").
        """
        written: list[str] = []
        for info in self.list_keys():
            opened = self.records.open_record(info.name, info.purpose)
            path = target.records.seal(
                info.name,
                info.purpose,
                opened.secret,
                replace=False,
                attributes=opened.header.attributes,
            )
            written.append(path.name)
        LOGGER.info(
            "resealed %d key(s) from %s into %s",
            len(written),
            self.records.directory.path,
            target.records.directory.path,
        )
        return written
