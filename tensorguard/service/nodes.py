"""Enrolled edge nodes: their signing keys, cohorts, heartbeats and ``last_seen``.

Enrolment registers the node in ``edge_nodes`` (if new) and stores its Ed25519
request-signing key and cohort in ``node_credentials``; both changes and every heartbeat
are written with an audit-log row in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.models import EdgeNode, NodeCredential, record_audit, utc_now
from tensorguard.fleet.names import validate_name
from tensorguard.service.errors import NodeAlreadyEnrolledError, UnknownNodeError
from tensorguard.service.request_signing import ALGORITHM, load_public_key


@dataclass(frozen=True)
class NodeView:
    """What the service tells about an enrolled node (no key material but the public key)."""

    node_id: str
    fleet: str
    channel: str
    cohort: str
    public_key: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    installed_version: int | None


def _view(node: EdgeNode, credential: NodeCredential) -> NodeView:
    return NodeView(
        node_id=node.node_id,
        fleet=node.fleet,
        channel=node.channel,
        cohort=credential.cohort,
        public_key=credential.public_key,
        enrolled_at=credential.enrolled_at,
        last_seen_at=node.last_seen_at,
        installed_version=node.installed_version,
    )


def enrolled_node(session: Session, node_id: str) -> tuple[EdgeNode, NodeCredential]:
    """The node and its credential in ``session``, or :class:`UnknownNodeError`."""
    row = session.execute(
        select(EdgeNode, NodeCredential)
        .join(NodeCredential, NodeCredential.node_pk == EdgeNode.id)
        .where(EdgeNode.node_id == node_id)
    ).first()
    if row is None:
        raise UnknownNodeError(f"no enrolled edge node {node_id!r}")
    return row[0], row[1]


class NodeDirectory:
    """Enrolment and lookup of edge nodes in the application database."""

    def __init__(self, database: FleetDatabase) -> None:
        self.database = database

    def enrol(
        self,
        node_id: str,
        fleet: str,
        channel: str,
        cohort: str,
        public_key: str,
        *,
        actor: str,
    ) -> NodeView:
        """Enrol ``node_id`` with its public key; a node is enrolled once."""
        for kind, value in (("node", node_id), ("fleet", fleet), ("channel", channel)):
            validate_name(kind, value)
        validate_name("cohort", cohort)
        load_public_key(public_key)
        with self.database.session() as session:
            node = session.scalars(select(EdgeNode).where(EdgeNode.node_id == node_id)).first()
            if node is None:
                node = EdgeNode(node_id=node_id, fleet=fleet, channel=channel)
                session.add(node)
                session.flush()
            elif (node.fleet, node.channel) != (fleet, channel):
                raise NodeAlreadyEnrolledError(
                    f"node {node_id!r} is registered in fleet {node.fleet!r} channel "
                    f"{node.channel!r}; enrol it there or use a new node id"
                )
            if session.scalars(
                select(NodeCredential).where(NodeCredential.node_pk == node.id)
            ).first():
                raise NodeAlreadyEnrolledError(
                    f"node {node_id!r} is already enrolled; enrolment never replaces a key"
                )
            credential = NodeCredential(
                node_pk=node.id,
                algorithm=ALGORITHM,
                public_key=public_key.lower(),
                cohort=cohort,
                enrolled_at=utc_now(),
            )
            session.add(credential)
            record_audit(
                session,
                actor,
                "node.enrolled",
                f"node:{node_id}",
                {"fleet": fleet, "channel": channel, "cohort": cohort},
            )
            return _view(node, credential)

    def get(self, node_id: str) -> NodeView:
        """The enrolled node, or :class:`UnknownNodeError`."""
        with self.database.session() as session:
            return _view(*enrolled_node(session, node_id))

    def heartbeat(self, node_id: str, installed_version: int | None) -> NodeView:
        """Record that the node is alive now (``last_seen``) and what it runs."""
        with self.database.session() as session:
            node, credential = enrolled_node(session, node_id)
            node.last_seen_at = utc_now()
            if installed_version is not None:
                node.installed_version = installed_version
            return _view(node, credential)
