"""Signed rollback orders: revoke a canary release and reinstall the previous one.

An edge agent never installs a version below its high-water mark from an announcement
(announcements are not trusted). When a canary release misbehaves, the pipeline signs a
:class:`RollbackOrder` with the **release key** — the key the nodes already pin in their
trust store — under the domain-separated context :data:`SIGNATURE_CONTEXT`: "channel C
revokes version N (this package digest); reinstall version M (this announcement)". A node
running exactly the revoked package verifies the order, fetches the restore package and
installs it only if that package's own signature names version M; its high-water mark
stays at N, so neither N nor anything older can come back through announcements.

The order is published retained on ``tensorguard/v1/{fleet}/{channel}/rollback``
(:func:`tensorguard.fleet.topics.rollback_topic`), so a node offline during the rollback
applies it when it reconnects.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, Field, model_validator

from tensorguard._codec_schema import Sha256Hex
from tensorguard.codec import canonical_json
from tensorguard.crypto import CompositeSigner, CryptoError
from tensorguard.fleet.errors import FleetError
from tensorguard.fleet.messages import (
    FleetMessage,
    Name,
    ReleaseAnnouncement,
    utc_now,
)
from tensorguard.tgsp import TrustStore

SIGNATURE_CONTEXT: Final = b"tensorguard/rollback-order/v1"


class RollbackOrderError(FleetError):
    """A rollback order is malformed, signed by an untrusted key, or does not verify."""


class RollbackOrder(FleetMessage):
    """Revoke ``revoked_version`` of a channel and reinstall ``restore``."""

    format: Literal["tensorguard.rollback-order/v1"] = "tensorguard.rollback-order/v1"
    fleet: Name
    channel: Name
    revoked_version: Annotated[int, Field(ge=2)]
    revoked_digest: Sha256Hex
    restore: ReleaseAnnouncement
    reason: Annotated[str, Field(max_length=2048)]
    issued_at: AwareDatetime = Field(default_factory=utc_now)

    @model_validator(mode="after")
    def _restores_an_older_release_of_the_channel(self) -> RollbackOrder:
        if (self.restore.fleet, self.restore.channel) != (self.fleet, self.channel):
            raise ValueError("the restore release must be of the same fleet and channel")
        if self.restore.version >= self.revoked_version:
            raise ValueError("the restore release must be older than the revoked one")
        return self

    def canonical_bytes(self) -> bytes:
        """The RFC 8785 canonical JSON that is signed."""
        return canonical_json(self.model_dump(mode="json"))


class SignedRollbackOrder(FleetMessage):
    """A rollback order, the signer's key id (fingerprint) and its composite signature."""

    format: Literal["tensorguard.signed-rollback-order/v1"] = "tensorguard.signed-rollback-order/v1"
    order: RollbackOrder
    signer: Sha256Hex
    signature: Annotated[str, Field(min_length=1, max_length=8192)]

    def verify(self, trust_store: TrustStore) -> RollbackOrder:
        """Return the order once its signer is a pinned release key and it verifies."""
        key = trust_store.get(self.signer)
        if key is None:
            raise RollbackOrderError(
                f"rollback order signed by {self.signer[:16]}, which is not a pinned release "
                "key in this node's trust store"
            )
        try:
            signature = base64.b64decode(self.signature, validate=True)
            key.verify(self.order.canonical_bytes(), signature, SIGNATURE_CONTEXT)
        except (binascii.Error, ValueError, CryptoError) as exc:
            raise RollbackOrderError(f"rollback order signature does not verify: {exc}") from exc
        return self.order


def sign_rollback_order(order: RollbackOrder, signer: CompositeSigner) -> SignedRollbackOrder:
    """Sign ``order`` with the release key (the key the nodes' trust stores pin)."""
    signature = signer.sign(order.canonical_bytes(), SIGNATURE_CONTEXT)
    return SignedRollbackOrder(
        order=order,
        signer=signer.public_key().fingerprint(),
        signature=base64.b64encode(signature).decode("ascii"),
    )
