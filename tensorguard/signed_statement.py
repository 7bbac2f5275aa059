"""Verify a statement signed with a composite key that the statement itself names.

Safety evaluations and deployment approvals have the same shape: an RFC 8785 payload
naming its signer's key fingerprint, the signer's composite ML-DSA-65 + Ed25519 public
key and the signature, both base64, and a domain-separated signing context. They are
accepted only when the key decodes, is the key the payload names, is trusted, and the
signature verifies over the payload under the context — in that order, so an untrusted
signer is named before any signature work. Each statement type maps failures to its own
error classes. :func:`sign_statement` is the signing side: it refuses a signer whose key
is not the key the statement names.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Collection
from dataclasses import dataclass

from tensorguard.crypto import CompositeSigner, CompositeVerifyKey, CryptoError
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
    error: type[TensorGuardError]  # the statement's own error, e.g. a mis-named signer
    fingerprint_fix: str  # what to do when the signing key is not the one named


def sign_statement(
    kind: StatementKind,
    *,
    payload: bytes,
    context: bytes,
    named_fingerprint: str,
    signer: CompositeSigner,
) -> tuple[str, str]:
    """Sign ``payload`` under ``context``: the signer's public key and the signature, base64.

    Raises ``kind.error`` when the signer's key is not ``named_fingerprint``'s, the key
    the statement names (its signature would never verify).
    """
    public = signer.public_key()
    if public.fingerprint() != named_fingerprint:
        raise kind.error(
            f"the {kind.noun} names {kind.signer_role} key {named_fingerprint[:16]} but is "
            f"signed with {public.fingerprint()[:16]}; {kind.fingerprint_fix}"
        )
    signature = signer.sign(payload, context)
    return (
        base64.b64encode(public.public_bytes()).decode("ascii"),
        base64.b64encode(signature).decode("ascii"),
    )


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
