"""Integration connectors in the application database: settings, sealed credentials, health.

Credentials (the MQTT password, the webhook secret) are sealed with
:class:`~tensorguard.service.credential_seal.CredentialSeal` before they are stored and
are never part of a :class:`ConnectorView`; settings hold only what may be shown. A
check runs the connector's real health check (:mod:`tensorguard.fleet.connectors`) and
records ``last_checked_at``, the status and detail, and ``last_seen_at`` when it connected.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tensorguard.fleet.connectors import (
    REAL_KINDS,
    ConnectorError,
    ConnectorHealth,
    ConnectorStatus,
    build_connector,
)
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.models import ConnectorRow, record_audit, utc_now
from tensorguard.fleet.names import validate_name
from tensorguard.service.credential_seal import CredentialSeal
from tensorguard.service.errors import ConnectorExistsError, UnknownConnectorError

SECRET_SETTING_NAMES = frozenset({"password", "secret", "token", "api_key", "credentials"})


@dataclass(frozen=True)
class ConnectorView:
    """What the API shows of a connector: never its credentials."""

    name: str
    kind: str
    settings: dict[str, Any]
    has_credentials: bool
    created_at: datetime
    created_by: str
    last_checked_at: datetime | None
    last_seen_at: datetime | None
    last_status: str | None
    last_detail: str | None


def _view(row: ConnectorRow) -> ConnectorView:
    return ConnectorView(
        name=row.name,
        kind=row.kind,
        settings=dict(row.settings),
        has_credentials=row.sealed_credentials is not None,
        created_at=row.created_at,
        created_by=row.created_by,
        last_checked_at=row.last_checked_at,
        last_seen_at=row.last_seen_at,
        last_status=row.last_status,
        last_detail=row.last_detail,
    )


class ConnectorStore:
    """Create, list and check connectors."""

    def __init__(self, database: FleetDatabase, seal: CredentialSeal) -> None:
        """Store connectors in ``database``, credentials sealed by ``seal``."""
        self.database = database
        self.seal = seal

    def create(
        self,
        name: str,
        kind: str,
        settings: Mapping[str, Any],
        credentials: str | None,
        *,
        actor: str,
    ) -> ConnectorView:
        """Store a connector; a real kind's settings and credentials must validate first."""
        validate_name("connector", name)
        validate_name("connector kind", kind)
        secret_keys = sorted(SECRET_SETTING_NAMES & set(settings))
        if secret_keys:
            raise ConnectorError(
                f"settings must not hold secrets ({', '.join(secret_keys)}); pass them as "
                "credentials, which are stored sealed and never shown"
            )
        if kind in REAL_KINDS:
            build_connector(name, kind, settings, credentials).validate_credentials()
        sealed = None if credentials is None else self.seal.seal(credentials, name=name, kind=kind)
        with self.database.session() as session:
            if session.scalars(select(ConnectorRow).where(ConnectorRow.name == name)).first():
                raise ConnectorExistsError(f"connector {name!r} exists; choose another name")
            row = ConnectorRow(
                name=name,
                kind=kind,
                settings=dict(settings),
                sealed_credentials=sealed,
                created_at=utc_now(),
                created_by=actor,
                healthy=False,
            )
            session.add(row)
            record_audit(session, actor, "connector.created", f"connector:{name}", {"kind": kind})
            return _view(row)

    def list(self) -> list[ConnectorView]:
        """Every connector, by name."""
        with self.database.session() as session:
            rows = session.scalars(select(ConnectorRow).order_by(ConnectorRow.name)).all()
            return [_view(row) for row in rows]

    @staticmethod
    def _row(session: Session, name: str) -> ConnectorRow:
        row = session.scalars(select(ConnectorRow).where(ConnectorRow.name == name)).first()
        if row is None:
            raise UnknownConnectorError(f"no connector named {name!r}")
        return row

    def check(self, name: str, *, actor: str) -> tuple[ConnectorView, ConnectorHealth]:
        """Run the connector's health check now and record its outcome."""
        with self.database.session() as session:
            row = self._row(session, name)
            kind, settings, sealed = row.kind, dict(row.settings), row.sealed_credentials
        credentials = None if sealed is None else self.seal.unseal(sealed, name=name, kind=kind)
        try:
            health = build_connector(name, kind, settings, credentials).health_check()
        except ConnectorError as exc:
            health = ConnectorHealth(ConnectorStatus.FAILED, str(exc))
        with self.database.session() as session:
            row = self._row(session, name)
            row.last_checked_at = health.checked_at
            row.last_status = health.status.value
            row.last_detail = health.detail
            row.healthy = health.status is ConnectorStatus.CONNECTED
            if row.healthy:
                row.last_seen_at = health.checked_at
            record_audit(
                session,
                actor,
                "connector.checked",
                f"connector:{name}",
                {"status": health.status.value},
            )
            return _view(row), health
