"""Authenticating a signed edge-node request against the node's enrolled key.

Order of checks (each failure is an :class:`AuthenticationError`): header formats, the
request time within the window, the node enrolled, the Ed25519 signature over method,
path, body digest, time, nonce and node id; only then is the nonce consumed, so a
forger cannot burn a node's nonces.
"""

from __future__ import annotations

from dataclasses import dataclass

from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.names import NAME_PATTERN
from tensorguard.service.errors import AuthenticationError, UnknownNodeError
from tensorguard.service.nodes import enrolled_node
from tensorguard.service.nonces import ReplayGuard
from tensorguard.service.request_signing import (
    NODE_HEADER,
    SignedRequest,
    check_freshness,
    check_nonce_format,
    load_public_key,
    parse_timestamp,
    verify_signature,
)
from tensorguard.service.tokens import Principal, Role


@dataclass(frozen=True)
class NodeCredentials:
    """The authentication headers of a node request, as received."""

    node_id: str
    timestamp: str
    nonce: str
    signature: str


class NodeAuthenticator:
    """Verifies signed node requests and consumes their nonces."""

    def __init__(self, database: FleetDatabase, window_s: int) -> None:
        self.database = database
        self.window_s = window_s
        self.replay_guard = ReplayGuard(database, window_s)

    def authenticate(
        self, method: str, path: str, body: bytes, credentials: NodeCredentials
    ) -> Principal:
        """The edge-node principal of a correctly signed, fresh, first-seen request."""
        if not NAME_PATTERN.fullmatch(credentials.node_id):
            raise AuthenticationError(f"{NODE_HEADER} is not a valid node id")
        timestamp = parse_timestamp(credentials.timestamp)
        check_nonce_format(credentials.nonce)
        check_freshness(timestamp, self.window_s)
        with self.database.session() as session:
            try:
                node, credential = enrolled_node(session, credentials.node_id)
            except UnknownNodeError:
                raise AuthenticationError("the signing node is not enrolled") from None
            node_pk, public_key = node.id, credential.public_key
        request = SignedRequest(
            method=method,
            path=path,
            body=body,
            timestamp=timestamp,
            nonce=credentials.nonce,
            node_id=credentials.node_id,
        )
        verify_signature(load_public_key(public_key), request, credentials.signature)
        self.replay_guard.use(node_pk, credentials.nonce)
        return Principal(subject=credentials.node_id, role=Role.EDGE_NODE)
