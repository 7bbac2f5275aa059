"""Signed freshness statements: the minimum acceptable version of a channel.

A node that has never installed anything on a channel has no high-water mark, so the
rollback rule alone would let it install any old, validly signed release (a stale
retained announcement, a replayed one). The registry therefore publishes, per channel, a
statement signed by the release key::

    {"format": "tensorguard.freshness/v1",
     "statement": {"channel": "stable", "minimum_version": 2,
                   "issued_at": 1767225600, "expires_at": 1767830400},
     "key_id": "<SHA-256 fingerprint of the release key>",
     "signature": "<base64 composite ML-DSA-65 + Ed25519 signature>"}

The signature covers the RFC 8785 form of ``statement`` under the context
``tensorguard/freshness/v1``. ``minimum_version`` is the channel's latest release when
the statement was issued. A node accepts a release only if the statement verifies
against its pinned trust store, is for the release's channel, is neither expired nor
issued in the future, and the release's version is at least ``minimum_version``
(:func:`check_freshness`).

Limits: a statement is a claim at ``issued_at``; a replayed statement older than a newer
release is accepted until it expires, so ``expires_at`` bounds the window in which an
outdated release can still be offered to a fresh node (default 7 days; re-issue with
:meth:`tensorguard.fleet.registry.LocalRegistry.publish_freshness`).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from tensorguard.codec import CodecError, canonical_json, parse_json_object
from tensorguard.crypto import CompositeSigner, SignatureError
from tensorguard.tgsp._errors import PolicyError, RollbackError
from tensorguard.tgsp._rollback import validate_channel
from tensorguard.tgsp._trust import TrustStore

FRESHNESS_FORMAT = "tensorguard.freshness/v1"
FRESHNESS_CONTEXT = b"tensorguard/freshness/v1"
DEFAULT_VALIDITY_SECONDS = 7 * 86_400
MAX_DOCUMENT_BYTES = 64 * 1024
CLOCK_SKEW_SECONDS = 300


class FreshnessError(PolicyError):
    """A freshness statement is missing, malformed, unsigned, untrusted or out of date."""


class StaleReleaseError(RollbackError):
    """A release is older than the channel's signed minimum version."""


@dataclass(frozen=True)
class FreshnessStatement:
    """The channel's minimum acceptable version, as of ``issued_at`` (Unix seconds)."""

    channel: str
    minimum_version: int
    issued_at: int
    expires_at: int

    def to_json(self) -> dict[str, object]:
        """The signed object."""
        return {
            "channel": self.channel,
            "minimum_version": self.minimum_version,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
        }

    def sign(self, signer: CompositeSigner) -> bytes:
        """The signed document (canonical JSON bytes)."""
        signature = signer.sign(canonical_json(self.to_json()), FRESHNESS_CONTEXT)
        return canonical_json(
            {
                "format": FRESHNESS_FORMAT,
                "statement": self.to_json(),
                "key_id": signer.public_key().fingerprint(),
                "signature": base64.b64encode(signature).decode("ascii"),
            }
        )


def issue_freshness(
    channel: str,
    minimum_version: int,
    signer: CompositeSigner,
    *,
    now: int,
    valid_for_seconds: int = DEFAULT_VALIDITY_SECONDS,
) -> bytes:
    """Sign a statement that ``channel`` accepts nothing below ``minimum_version``."""
    validate_channel(channel)
    if minimum_version < 1 or valid_for_seconds < 1:
        raise ValueError("minimum_version and valid_for_seconds must be positive")
    statement = FreshnessStatement(channel, minimum_version, now, now + valid_for_seconds)
    return statement.sign(signer)


def _parse(document: bytes) -> tuple[FreshnessStatement, str, bytes]:
    if len(document) > MAX_DOCUMENT_BYTES:
        raise FreshnessError("freshness statement is larger than 64 KiB")
    try:
        outer = parse_json_object(document, what="freshness statement", allow_floats=False)
        if outer.get("format") != FRESHNESS_FORMAT or set(outer) != {
            "format",
            "statement",
            "key_id",
            "signature",
        }:
            raise ValueError(f"expected a {FRESHNESS_FORMAT} document")
        inner = outer["statement"]
        if not isinstance(inner, dict) or set(inner) != {
            "channel",
            "minimum_version",
            "issued_at",
            "expires_at",
        }:
            raise ValueError("statement needs channel, minimum_version, issued_at, expires_at")
        numbers = [inner[name] for name in ("minimum_version", "issued_at", "expires_at")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            raise ValueError("versions and times must be non-negative integers")
        if not isinstance(inner["channel"], str) or not isinstance(outer["key_id"], str):
            raise ValueError("channel and key_id must be strings")
        statement = FreshnessStatement(validate_channel(inner["channel"]), *numbers)
        signature = base64.b64decode(str(outer["signature"]), validate=True)
    except (CodecError, ValueError, binascii.Error) as exc:
        raise FreshnessError(f"freshness statement is malformed: {exc}") from exc
    return statement, outer["key_id"], signature


def verify_freshness(
    document: bytes, trust_store: TrustStore, *, channel: str, now: int
) -> FreshnessStatement:
    """Return the statement if it is signed by a pinned key, for ``channel`` and current."""
    statement, key_id, signature = _parse(document)
    key = trust_store.get(key_id)
    if key is None:
        raise FreshnessError(
            f"freshness statement is signed by key {key_id[:16]}…, which is not in the trust store"
        )
    try:
        key.verify(canonical_json(statement.to_json()), signature, FRESHNESS_CONTEXT)
    except SignatureError as exc:
        raise FreshnessError(f"freshness statement signature rejected: {exc}") from exc
    if statement.channel != channel:
        raise FreshnessError(
            f"freshness statement is for channel {statement.channel!r}, not {channel!r}"
        )
    if statement.issued_at > now + CLOCK_SKEW_SECONDS:
        raise FreshnessError("freshness statement was issued in the future; check the clocks")
    if now >= statement.expires_at:
        raise FreshnessError(
            f"freshness statement for {channel!r} expired at {statement.expires_at} (now "
            f"{now}); the registry must re-issue it (LocalRegistry.publish_freshness)"
        )
    return statement


def check_freshness(statement: FreshnessStatement, version: int) -> None:
    """Refuse a release older than the statement's minimum version."""
    if version < statement.minimum_version:
        raise StaleReleaseError(
            f"version {version} of channel {statement.channel!r} is older than the signed "
            f"minimum version {statement.minimum_version} (issued at {statement.issued_at}); "
            "refusing a stale release"
        )
