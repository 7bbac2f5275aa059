"""Verify a statement signed with a composite key that the statement itself names.

Safety evaluations and deployment approvals have the same shape: an RFC 8785 payload
naming its signer's key fingerprint, the signer's composite ML-DSA-65 + Ed25519 public
key and the signature, both base64, and a domain-separated signing context. They are
accepted only when the key decodes, is the key the payload names, is trusted, and the
signature verifies over the payload under the context — in that order, so an untrusted
signer is named before any signature work. Each statement type maps failures to its own
error classes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass

from tensorguard.crypto import CompositeVerifyKey, CryptoError
from tensorguard.errors import TensorGuardError


@dataclass(frozen=True)
class StatementKind:
    """How one statement type names itself and its signer in errors, and its errors."""

    title: str  # e.g. "safety evaluation"
    noun: str  # e.g. "evaluation", in "the key the evaluation names"
    signer_role: str  # e.g. "evaluator"
    untrusted_hint: str  # why the key is not trusted and what to do
    signature_error: type[TensorGuardError]
    untrusted_error: type[TensorGuardError]


def verify_signed_statement(
    kind: StatementKind,
    *,
    payload: bytes,
    context: bytes,
    public_key: str,
    signature: str,
    named_fingerprint: str,
    signer_label: str,
    trusted_fingerprints: Collection[str],
) -> CompositeVerifyKey:
    """Return the signer's key once every check passes; raise ``kind``'s errors."""
    try:
        key = CompositeVerifyKey.from_public_bytes(_b64decode(kind, public_key, "public_key"))
    except CryptoError as exc:
        raise kind.signature_error(f"{kind.signer_role} public key does not decode: {exc}") from exc
    fingerprint = key.fingerprint()
    if fingerprint != named_fingerprint:
        raise kind.signature_error(
            f"the public key is not the key the {kind.noun} names (fingerprint "
            f"{fingerprint[:16]} vs {named_fingerprint[:16]})"
        )
    if fingerprint not in trusted_fingerprints:
        raise kind.untrusted_error(
            f"{kind.signer_role} key {fingerprint[:16]} ({signer_label!r}) is not "
            f"{kind.untrusted_hint}"
        )
    try:
        key.verify(payload, _b64decode(kind, signature, "signature"), context)
    except CryptoError as exc:
        raise kind.signature_error(f"{kind.title} signature does not verify: {exc}") from exc
    return key


def _b64decode(kind: StatementKind, value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise kind.signature_error(f"{what} is not valid base64") from exc
