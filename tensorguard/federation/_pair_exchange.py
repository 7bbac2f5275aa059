"""Establishing a site's pairwise secrets through the coordinator's mailbox.

Sites train and report independently, in any order and possibly at the same time, so
no site can wait for another to go first. For each unordered pair of enrolled sites
the *first* of the two to need the pair's secret makes the one
:class:`~tensorguard.federation._pairwise.PairwiseOffer` of that pair (X-Wing
encapsulation to the peer's registered key, composite-signed) and posts it to the
:class:`PairwiseMailbox`; the second opens it. Posting is an atomic create that never
replaces a file, so when both sites race, one offer wins and the loser opens it.

The mailbox is the coordinator's relay: it holds only signed X-Wing ciphertexts, from
which neither the coordinator nor the aggregator nor the custodian can learn a pair
secret. Each site keeps its pair secrets in its own :class:`PairSecretStore` (its key
provider), one per peer and key epoch; the epoch is bound into every offer and seed.
"""

from __future__ import annotations

import secrets as secrets_module
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, XWingPrivateKey, XWingPublicKey
from tensorguard.durable import DestinationExistsError, atomic_write_bytes, ensure_directory
from tensorguard.federation._pairwise import (
    SELF_SECRET_SIZE,
    PairwiseError,
    PairwiseOffer,
    PairwiseSecrets,
    create_pairwise_offer,
    open_pairwise_offer,
)

OFFER_SUFFIX = ".offer"


class PairSecretStore(Protocol):
    """Where one site keeps its pair secrets (its own key provider).

    The slot named by the site's own id holds its self-mask secret for the epoch.
    """

    def load_pair_secret(self, epoch_id: str, peer: str) -> bytes | None:
        """The secret shared with ``peer`` in ``epoch_id``, or None if none is stored."""
        ...

    def store_pair_secret(self, epoch_id: str, peer: str, secret: bytes) -> None:
        """Persist the secret shared with ``peer`` in ``epoch_id`` (never replaced)."""
        ...


class InMemoryPairSecretStore:
    """A :class:`PairSecretStore` in a dict, for sites simulated in one process (tests,
    benchmarks); a deployment keeps pair secrets in the site's key provider."""

    def __init__(self) -> None:
        self._secrets: dict[tuple[str, str], bytes] = {}

    def load_pair_secret(self, epoch_id: str, peer: str) -> bytes | None:
        """The stored secret, or None."""
        return self._secrets.get((epoch_id, peer))

    def store_pair_secret(self, epoch_id: str, peer: str, secret: bytes) -> None:
        """Store a new secret; an existing one is never replaced."""
        if (epoch_id, peer) in self._secrets:
            raise PairwiseError(f"a pair secret for {peer!r} in {epoch_id!r} is already stored")
        self._secrets[(epoch_id, peer)] = secret


class PairwiseMailbox:
    """The coordinator's relay of pairwise offers: one file per pair and epoch."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def offer_path(self, epoch_id: str, site_a: str, site_b: str) -> Path:
        """Where the offer of the pair ``{site_a, site_b}`` lives in ``epoch_id``."""
        low, high = sorted((site_a, site_b))
        return self.root / epoch_id / f"{low}__{high}{OFFER_SUFFIX}"

    def fetch(self, epoch_id: str, site_a: str, site_b: str) -> bytes | None:
        """The pair's offer, or None if neither site has posted one yet."""
        path = self.offer_path(epoch_id, site_a, site_b)
        return path.read_bytes() if path.is_file() else None

    def post(self, offer: PairwiseOffer) -> bool:
        """Post ``offer``; False when the pair already has one (the other site won)."""
        path = self.offer_path(offer.epoch_id, offer.sender, offer.recipient)
        ensure_directory(path.parent)
        try:
            atomic_write_bytes(path, offer.to_bytes(), overwrite=False)
        except DestinationExistsError:
            return False
        return True


@dataclass(frozen=True)
class _SiteExchange:
    """One site's side of the exchange in one epoch: who it is and the keys it uses."""

    epoch_id: str
    site_id: str
    mailbox: PairwiseMailbox
    signer: CompositeSigner
    kem_private: XWingPrivateKey
    roster_kem_keys: Mapping[str, XWingPublicKey]
    signing_keys: Mapping[str, CompositeVerifyKey]

    def secret_with(self, peer: str) -> bytes:
        """The pair's secret: open the peer's posted offer, or post this site's own."""
        posted = self.mailbox.fetch(self.epoch_id, self.site_id, peer)
        if posted is not None:
            return self._open(posted)
        peer_kem_key = self.roster_kem_keys.get(peer)
        if peer_kem_key is None:
            raise PairwiseError(
                f"site {peer!r} has no registered X-Wing key, so no pair secret can be made "
                "with it; add kem_public_key to its site registry entry"
            )
        offer, secret = create_pairwise_offer(
            self.epoch_id, self.site_id, self.signer, peer, peer_kem_key
        )
        if self.mailbox.post(offer):
            return secret
        posted = self.mailbox.fetch(self.epoch_id, self.site_id, peer)  # the peer won the race
        if posted is None:
            raise PairwiseError(
                f"the pairwise offer for {self.site_id}/{peer} vanished from the mailbox"
            )
        return self._open(posted)

    def _open(self, posted: bytes) -> bytes:
        offer = PairwiseOffer.from_bytes(posted)
        if offer.sender == self.site_id:
            raise PairwiseError(
                f"the mailbox holds an offer this site ({self.site_id}) made in epoch "
                f"{self.epoch_id}, but its pair secret is not in this site's key store; the "
                "store was lost or this is another site using the same id. Start a new key "
                "epoch (re-run the key ceremony)"
            )
        _, secret = open_pairwise_offer(
            posted,
            epoch_id=self.epoch_id,
            site_id=self.site_id,
            kem_private=self.kem_private,
            signing_keys=self.signing_keys,
        )
        return secret


def site_pairwise_secrets(
    *,
    epoch_id: str,
    site_id: str,
    roster: Collection[str],
    mailbox: PairwiseMailbox,
    store: PairSecretStore,
    signer: CompositeSigner,
    kem_private: XWingPrivateKey,
    roster_kem_keys: Mapping[str, XWingPublicKey],
    signing_keys: Mapping[str, CompositeVerifyKey],
) -> PairwiseSecrets:
    """This site's secret with every other roster site, made or opened as needed, and
    its own self-mask secret (random, made once per epoch, kept in ``store``).

    ``roster_kem_keys`` (the peers' X-Wing public keys) and ``signing_keys`` (their
    composite verify keys) come from the trusted site registry, never from the mailbox.
    """
    if site_id not in roster:
        raise PairwiseError(f"site {site_id!r} is not enrolled in this round's roster")
    exchange = _SiteExchange(
        epoch_id, site_id, mailbox, signer, kem_private, roster_kem_keys, signing_keys
    )
    secrets: dict[str, bytes] = {}
    for peer in sorted(set(roster) - {site_id}):
        secret = store.load_pair_secret(epoch_id, peer)
        if secret is None:
            secret = exchange.secret_with(peer)
            store.store_pair_secret(epoch_id, peer, secret)
        secrets[peer] = secret
    self_secret = store.load_pair_secret(epoch_id, site_id)
    if self_secret is None:
        self_secret = secrets_module.token_bytes(SELF_SECRET_SIZE)
        store.store_pair_secret(epoch_id, site_id, self_secret)
    return PairwiseSecrets(epoch_id, site_id, secrets, self_secret)
