"""Replay protection for signed node requests: each nonce is accepted once per node.

Nonces live in ``request_nonces`` (unique per node), so the guard holds across
restarts and across server processes sharing the database. Rows older than the
signature window are pruned: a request that old is refused by its timestamp anyway.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select

from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.errors import FleetDatabaseError
from tensorguard.fleet.models import RequestNonce, utc_now
from tensorguard.service.errors import AuthenticationError


class ReplayGuard:
    """Records each (node, nonce) once; a second use raises :class:`AuthenticationError`."""

    def __init__(self, database: FleetDatabase, window_s: int) -> None:
        self.database = database
        # Timestamps up to window_s in the past or future are accepted; keep nonces until
        # such a request would be refused by its time.
        self.retention = timedelta(seconds=2 * window_s)

    def _seen(self, node_pk: int, nonce: str) -> bool:
        with self.database.session() as session:
            found = session.scalars(
                select(RequestNonce.id).where(
                    RequestNonce.node_pk == node_pk, RequestNonce.nonce == nonce
                )
            ).first()
            return found is not None

    def use(self, node_pk: int, nonce: str) -> None:
        """Consume ``nonce`` for the node, or refuse the request as a replay."""
        if self._seen(node_pk, nonce):
            raise AuthenticationError("request nonce already used (replayed request)")
        now = utc_now()
        try:
            with self.database.session() as session:
                session.execute(
                    delete(RequestNonce).where(RequestNonce.seen_at < now - self.retention)
                )
                session.add(RequestNonce(node_pk=node_pk, nonce=nonce, seen_at=now))
        except FleetDatabaseError:
            # Lost a race with a concurrent request carrying the same nonce?
            if self._seen(node_pk, nonce):
                raise AuthenticationError("request nonce already used (replayed request)") from None
            raise
