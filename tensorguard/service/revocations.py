"""Token revocation: a token's ``jti`` recorded in ``revoked_tokens`` until it expires.

Tokens are short-lived, so the list stays small: a row is only needed until the token
would have expired anyway (plus the clock leeway), and older rows are pruned on each
revocation.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.models import RevokedToken, record_audit, utc_now


class TokenRevocations:
    """Revoke tokens by id and ask whether a token id is revoked."""

    def __init__(self, database: FleetDatabase, leeway_s: int) -> None:
        self.database = database
        # A token is accepted up to the clock leeway past its exp: keep its row that long.
        self.retention = timedelta(seconds=leeway_s + 60)

    def revoke(self, jti: str, expires_at: int, *, actor: str) -> None:
        """Revoke token ``jti`` (valid until unix time ``expires_at``); idempotent."""
        if self.is_revoked(jti):
            return
        now = utc_now()
        with self.database.session() as session:
            expired = RevokedToken.expires_at < now - self.retention
            session.execute(delete(RevokedToken).where(expired))
            session.add(
                RevokedToken(
                    jti=jti,
                    expires_at=datetime.fromtimestamp(expires_at, UTC),
                    revoked_at=now,
                    revoked_by=actor,
                )
            )
            record_audit(session, actor, "token.revoked", f"token:{jti}", {})

    def is_revoked(self, jti: str) -> bool:
        """True when ``jti`` was revoked."""
        with self.database.session() as session:
            found = session.scalars(select(RevokedToken.id).where(RevokedToken.jti == jti)).first()
            return found is not None
