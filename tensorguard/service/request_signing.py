"""Signed edge-node requests: Ed25519 over method, path, body digest, time, nonce and node.

A node signs each request with the Ed25519 key it enrolled. The signed message is the
domain tag and six fields, one per line::

    tensorguard.node-request/v1
    <METHOD>
    <path with query>
    <SHA-256 hex of the body>
    <unix time, integer seconds>
    <nonce>
    <node id>

and travels in four headers (:data:`NODE_HEADER`, :data:`TIMESTAMP_HEADER`,
:data:`NONCE_HEADER`, :data:`SIGNATURE_HEADER`; the signature base64url without
padding). The server refuses a time outside its window and a nonce it has already seen
from that node (:mod:`tensorguard.service.nonces`). This module needs only
``cryptography``, so an edge agent can sign without the service's dependencies.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from tensorguard.service.errors import AuthenticationError

DOMAIN = b"tensorguard.node-request/v1"
NODE_HEADER = "X-TG-Node"
TIMESTAMP_HEADER = "X-TG-Timestamp"
NONCE_HEADER = "X-TG-Nonce"
SIGNATURE_HEADER = "X-TG-Signature"
ALGORITHM = "ed25519"
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
TIMESTAMP_PATTERN = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class SignedRequest:
    """The parts of a request that a node signature covers."""

    method: str
    path: str
    body: bytes
    timestamp: int
    nonce: str
    node_id: str

    def message(self) -> bytes:
        """The exact bytes that are signed."""
        fields = (
            self.method.upper(),
            self.path,
            hashlib.sha256(self.body).hexdigest(),
            str(self.timestamp),
            self.nonce,
            self.node_id,
        )
        return b"\n".join([DOMAIN, *(field.encode() for field in fields)])


def public_key_hex(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key, hex: the form enrolment takes."""
    return public_key.public_bytes_raw().hex()


def load_public_key(hex_key: str) -> Ed25519PublicKey:
    """Parse an enrolled public key (64 hex characters)."""
    try:
        raw = bytes.fromhex(hex_key)
        if len(raw) != 32:
            raise ValueError("wrong length")
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise AuthenticationError(
            "public key must be a raw Ed25519 key of 32 bytes, hex-encoded (64 characters)"
        ) from None


def sign_request(
    private_key: Ed25519PrivateKey,
    node_id: str,
    method: str,
    path: str,
    body: bytes = b"",
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers that authenticate this request as coming from ``node_id``."""
    request = SignedRequest(
        method=method,
        path=path,
        body=body,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        nonce=secrets.token_urlsafe(24) if nonce is None else nonce,
        node_id=node_id,
    )
    signature = private_key.sign(request.message())
    return {
        NODE_HEADER: node_id,
        TIMESTAMP_HEADER: str(request.timestamp),
        NONCE_HEADER: request.nonce,
        SIGNATURE_HEADER: base64.urlsafe_b64encode(signature).rstrip(b"=").decode(),
    }


def parse_timestamp(raw: str) -> int:
    """A request time header as integer seconds, or :class:`AuthenticationError`."""
    if not TIMESTAMP_PATTERN.fullmatch(raw):
        raise AuthenticationError(f"{TIMESTAMP_HEADER} must be integer unix seconds")
    return int(raw)


def check_nonce_format(nonce: str) -> None:
    """Refuse a nonce that is not 16-64 characters of ``A-Z a-z 0-9 _ -``."""
    if not NONCE_PATTERN.fullmatch(nonce):
        raise AuthenticationError(f"{NONCE_HEADER} must be 16-64 characters of A-Z a-z 0-9 _ -")


def check_freshness(timestamp: int, window_s: int, now: float | None = None) -> None:
    """Refuse a request time further than ``window_s`` from the server's clock."""
    skew = abs((time.time() if now is None else now) - timestamp)
    if skew > window_s:
        raise AuthenticationError(
            f"request time is {int(skew)} s from the server clock (window {window_s} s); "
            "check the node's clock"
        )


def verify_signature(public_key: Ed25519PublicKey, request: SignedRequest, signature: str) -> None:
    """Raise :class:`AuthenticationError` unless ``signature`` is the node's over ``request``."""
    if len(signature) > 128:
        raise AuthenticationError(f"{SIGNATURE_HEADER} is too long")
    try:
        raw = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
    except (binascii.Error, ValueError):
        raise AuthenticationError(f"{SIGNATURE_HEADER} is not base64url") from None
    if len(raw) != 64:
        raise AuthenticationError(f"{SIGNATURE_HEADER} is not a 64-byte Ed25519 signature")
    try:
        public_key.verify(raw, request.message())
    except InvalidSignature:
        raise AuthenticationError(
            "request signature does not verify (method, path, body, time, nonce or node altered, "
            "or signed with another key)"
        ) from None
