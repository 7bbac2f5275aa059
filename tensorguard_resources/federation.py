"""Adapters between the key vault and the federation's secret-store protocol."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tensorguard.keys import KeyProvider, KeyPurpose


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


@dataclass(frozen=True)
class PairSecretVault:
    """One site's pairwise secrets (secure aggregation), sealed in its key provider.

    Key names are derived from the epoch, the site and the peer (hashed, because key
    names are short), so secrets of different epochs and sites never collide.
    """

    provider: KeyProvider
    site_id: str

    def _name(self, epoch_id: str, peer: str) -> str:
        digest = hashlib.sha256(f"{epoch_id}\0{self.site_id}\0{peer}".encode()).hexdigest()
        return f"pair-{digest[:40]}"

    def load_pair_secret(self, epoch_id: str, peer: str) -> bytes | None:
        """The secret shared with ``peer`` in ``epoch_id``, if this site holds one."""
        name = self._name(epoch_id, peer)
        if not self.provider.has_key(name, KeyPurpose.GENERIC):
            return None
        return self.provider.load_secret(name, KeyPurpose.GENERIC)

    def store_pair_secret(self, epoch_id: str, peer: str, secret: bytes) -> None:
        """Seal a new pair secret (an existing one is never overwritten)."""
        self.provider.store_secret(self._name(epoch_id, peer), KeyPurpose.GENERIC, secret)


@dataclass(frozen=True)
class ServerStateVault:
    """The custodian's server-optimiser state, sealed in its key provider.

    Each state is stored under the digest of the global adapter it produced, and the
    next round loads it by its reference digest, so a state only ever continues from
    the exact adapter it was made with.
    """

    provider: KeyProvider

    @staticmethod
    def _name(adapter_digest: str) -> str:
        return f"server-opt-{adapter_digest[:40]}"

    def load_state(self, adapter_digest: str) -> bytes | None:
        """The state kept for the adapter with ``adapter_digest``, or None."""
        name = self._name(adapter_digest)
        if not self.provider.has_key(name, KeyPurpose.GENERIC):
            return None
        return self.provider.load_secret(name, KeyPurpose.GENERIC)

    def store_state(self, adapter_digest: str, state: bytes) -> None:
        """Seal the state that continues from the adapter with ``adapter_digest``."""
        self.provider.store_secret(
            self._name(adapter_digest), KeyPurpose.GENERIC, state, replace=True
        )
