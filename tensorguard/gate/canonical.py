"""Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and its SHA-256 digest.

Policies, evidence and decisions are hashed over their canonical form, so the digest
does not depend on key order, whitespace, YAML comments or how a number was written
(``6``, ``6.0`` and ``6e0`` all canonicalise to ``6``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import rfc8785

from tensorguard.gate.errors import GateError


def canonical_json(document: Mapping[str, Any]) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of a JSON-compatible mapping."""
    try:
        return rfc8785.dumps(dict(document))
    except (rfc8785.CanonicalizationError, TypeError, ValueError) as exc:
        raise GateError(
            f"cannot canonicalise document as RFC 8785 JSON: {exc}; only finite numbers, "
            "strings, booleans, null, lists and string-keyed objects are allowed"
        ) from exc


def canonical_digest(document: Mapping[str, Any]) -> str:
    """Return the lower-case hex SHA-256 of :func:`canonical_json` of ``document``."""
    return hashlib.sha256(canonical_json(document)).hexdigest()
