"""Adapters between the key vault and the federation's secret-store protocol."""

from __future__ import annotations

from dataclasses import dataclass

from tensorguard.keys.names import KeyPurpose
from tensorguard.keys.provider import KeyProvider


@dataclass(frozen=True)
class CKKSSecretStore:
    """Stores the federation's CKKS secret context as a CKKS_SECRET key record."""

    provider: KeyProvider

    def store_secret(self, name: str, data: bytes) -> None:
        """Seal a new secret context; an existing name is never overwritten."""
        self.provider.store_secret(name, KeyPurpose.CKKS_SECRET, data)

    def load_secret(self, name: str) -> bytes:
        """Unseal the secret context (the custodian's step only)."""
        return self.provider.load_secret(name, KeyPurpose.CKKS_SECRET)
