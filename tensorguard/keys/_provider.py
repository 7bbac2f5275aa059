"""The key-provider interface: named secrets at rest and composite signers.

A provider keeps two kinds of keys:

* **secrets** (CKKS secret contexts, X-Wing private keys, other blobs) stored and loaded
  by name and :class:`~tensorguard.keys._names.KeyPurpose` (X-Wing keys also through
  :meth:`KeyProvider.generate_kem_key` / :meth:`KeyProvider.kem_private_key`);
* **signing keys** (composite ML-DSA-65 + Ed25519), which never leave the provider as
  bytes: callers get a :class:`~tensorguard.crypto._composite.CompositeSigner`.

Signing keys are created only by an explicit :meth:`KeyProvider.generate_signing_key`
call. :meth:`KeyProvider.signer_for` may create a missing key in development when asked
to, and says so in a warning; in production it refuses.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, XWingPrivateKey, XWingPublicKey
from tensorguard.keys._closing import Closeable
from tensorguard.keys._errors import KeyExistsError, KeyProviderProductionError
from tensorguard.keys._names import KeyPurpose

LOGGER = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyInfo:
    """What a provider can say about a stored key without decrypting it."""

    name: str
    purpose: KeyPurpose
    provider: str
    created_at: datetime
    location: str


class KeyProvider(Closeable):
    """Stores named secrets and produces composite signers; see the module docstring."""

    kind: ClassVar[str]

    def __init__(self, *, production: bool) -> None:
        self.production = production

    @abstractmethod
    def store_secret(
        self, name: str, purpose: KeyPurpose, secret: bytes, *, replace: bool = False
    ) -> None:
        """Seal ``secret`` under ``name`` for ``purpose``; refuse to overwrite unless asked."""

    @abstractmethod
    def load_secret(self, name: str, purpose: KeyPurpose) -> bytes:
        """Return the secret stored under ``name`` for ``purpose``, authenticated."""

    @abstractmethod
    def has_key(self, name: str, purpose: KeyPurpose) -> bool:
        """True when a key of that name and purpose exists."""

    @abstractmethod
    def list_keys(self) -> list[KeyInfo]:
        """Every stored key, described from non-secret metadata."""

    @abstractmethod
    def generate_signing_key(self, name: str) -> CompositeSigner:
        """Create a new composite signing key ``name``; refuse if it exists."""

    @abstractmethod
    def signer(self, name: str) -> CompositeSigner:
        """Return a signer for the existing key ``name``; never creates one."""

    def signer_for(self, name: str, *, generate_if_missing: bool = False) -> CompositeSigner:
        """Return the signer ``name``, creating it only in development and only on request."""
        if self.has_key(name, KeyPurpose.SIGNING) or not generate_if_missing:
            return self.signer(name)
        if self.production:
            raise KeyProviderProductionError(
                f"signing key {name!r} does not exist and production never creates keys "
                f"implicitly: create it once with `tensorguard keys generate --name {name}` "
                "and pin its fingerprint in the trust store"
            )
        try:
            signer = self.generate_signing_key(name)
        except KeyExistsError:
            return self.signer(name)
        LOGGER.warning(
            "DEVELOPMENT ONLY: signing key %r did not exist and was generated on the fly "
            "(fingerprint %s); production refuses this",
            name,
            signer.public_key().fingerprint(),
        )
        return signer

    def public_key(self, name: str) -> CompositeVerifyKey:
        """The composite public key of signing key ``name`` (authenticated by the provider)."""
        return self.signer(name).public_key()

    def fingerprint(self, name: str) -> str:
        """The key id (hex SHA-256 of the composite public key) of signing key ``name``."""
        return self.public_key(name).fingerprint()

    def generate_kem_key(self, name: str) -> XWingPublicKey:
        """Generate an X-Wing key pair, store its seed as ``name`` (KEM), return the public key."""
        private_key = XWingPrivateKey.generate()
        self.store_secret(name, KeyPurpose.KEM, private_key.private_bytes())
        public_key = private_key.public_key()
        LOGGER.info(
            "generated X-Wing key %r (fingerprint %s) with the %s provider",
            name,
            public_key.fingerprint(),
            self.kind,
        )
        return public_key

    def kem_private_key(self, name: str) -> XWingPrivateKey:
        """The X-Wing private key stored as ``name`` (KEM purpose)."""
        return XWingPrivateKey.from_seed(self.load_secret(name, KeyPurpose.KEM))

    def close(self) -> None:
        """Release provider resources (sessions, handles). Idempotent; most hold none."""
