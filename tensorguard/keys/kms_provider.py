"""KMSKeyProvider: an explicit refusal, because no cloud KMS client is built in.

TensorGuard ships no AWS KMS, Google Cloud KMS or Azure Key Vault client, and no cloud
KMS offers composite ML-DSA-65 + Ed25519 signing today. Rather than pretend, every
use of this provider raises :class:`KeyProviderUnavailable` naming the alternatives.
"""

from __future__ import annotations

from typing import NoReturn

from tensorguard.crypto.composite import CompositeSigner
from tensorguard.keys.errors import KeyProviderUnavailable
from tensorguard.keys.names import KeyPurpose
from tensorguard.keys.provider import KeyInfo, KeyProvider

KMS_UNAVAILABLE_MESSAGE = (
    "TG_KEY_PROVIDER=kms: the cloud KMS key provider is not available in this build "
    "(no AWS/GCP/Azure KMS client is configured or shipped, and no cloud KMS signs "
    "composite ML-DSA-65 + Ed25519). Use TG_KEY_PROVIDER=pkcs11 with your HSM's PKCS#11 "
    "library (cloud HSMs such as AWS CloudHSM expose one; the token must support "
    "CKM_EDDSA and AES-GCM), or TG_KEY_PROVIDER=file with TG_KEY_MASTER from your secret "
    "manager. See docs/KEYS.md."
)


def _refuse() -> NoReturn:
    raise KeyProviderUnavailable(KMS_UNAVAILABLE_MESSAGE)


class KMSKeyProvider(KeyProvider):
    """Cloud KMS provider: not available here; constructing it raises an explanation."""

    kind = "kms"

    def __init__(self, *, production: bool = False) -> None:
        """Always refuses: there is no cloud KMS integration to configure."""
        _refuse()

    def store_secret(
        self, name: str, purpose: KeyPurpose, secret: bytes, *, replace: bool = False
    ) -> None:
        """Refuses (see class docstring)."""
        _refuse()

    def load_secret(self, name: str, purpose: KeyPurpose) -> bytes:
        """Refuses (see class docstring)."""
        _refuse()

    def has_key(self, name: str, purpose: KeyPurpose) -> bool:
        """Refuses (see class docstring)."""
        _refuse()

    def list_keys(self) -> list[KeyInfo]:
        """Refuses (see class docstring)."""
        _refuse()

    def generate_signing_key(self, name: str) -> CompositeSigner:
        """Refuses (see class docstring)."""
        _refuse()

    def signer(self, name: str) -> CompositeSigner:
        """Refuses (see class docstring)."""
        _refuse()
