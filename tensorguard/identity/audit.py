"""The identity audit trail: every CA creation, issuance and revocation, signed and chained.

Entries are records of a :class:`~tensorguard.signed_log.SignedLog` (JSON lines, each
signed with the CA's composite ML-DSA-65 + Ed25519 audit key under
:data:`AUDIT_CONTEXT`, each naming the SHA-256 of the previous record), so an edited
entry fails its signature and a removed or reordered entry breaks the chain. Cutting
entries off the end is detected against a head (count and digest) recorded elsewhere —
e.g. printed by ``tensorguard audit verify`` into the operator's ticket or a second
system — passed back as ``expected_head``.

Renewal jobs (:mod:`tensorguard.identity.renewal`) append one ``renewal-transition``
entry per state change (``details``: ``from``, ``to``, attempt, reason, fingerprints).

Each entry: ``format``, ``event``, ``at``, ``job_id`` (the operation or renewal job that
caused it), ``endpoint_id`` (the node id or service name concerned; the CA's name for
CA events) and ``details`` (serial, profile, names, validity, reason, fingerprints).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from tensorguard.crypto import CompositeSigner, CompositeVerifyKey
from tensorguard.identity.errors import IdentityError
from tensorguard.signed_log import LogHead, SignedLog

AUDIT_CONTEXT = b"tensorguard/identity/audit/v1"
AUDIT_FORMAT = "tensorguard.identity.audit/v1"

DetailValue = str | int | list[str] | None


class AuditError(IdentityError):
    """The audit log is malformed, altered, reordered, cut short, or signed by another key."""


class AuditEvent(StrEnum):
    """What an audit entry records."""

    CA_CREATED = "ca-created"
    ISSUED = "issued"
    REVOKED = "revoked"
    INTERMEDIATE_ROTATED = "intermediate-rotated"
    RENEWAL_TRANSITION = "renewal-transition"


class AuditLog:
    """The audit log at ``path``, verified against the pinned ``verify_key``."""

    def __init__(self, path: Path, verify_key: CompositeVerifyKey) -> None:
        self.path = path
        self._log = SignedLog(
            path,
            verify_key,
            context=AUDIT_CONTEXT,
            error=AuditError,
            name="identity audit log",
            signer=f"the pinned audit key {verify_key.fingerprint()[:16]}…",
            remedy="Treat the CA's history as untrusted and restore the log from its backup",
        )

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, after checking each signature and the hash chain."""
        entries = self._log.records()
        for number, entry in enumerate(entries, start=1):
            if entry.get("format") != AUDIT_FORMAT or entry.get("event") not in set(AuditEvent):
                raise AuditError(
                    f"identity audit log {self.path} entry {number} is not an audit entry"
                )
        return entries

    def verify(self, expected_head: LogHead | None = None) -> LogHead:
        """Check every entry and the chain; with ``expected_head``, also that none was cut off."""
        self.entries()
        return self._log.verify(expected_head)

    def append(
        self,
        signer: CompositeSigner,
        event: AuditEvent,
        *,
        job_id: str,
        endpoint_id: str,
        details: dict[str, DetailValue],
        at: datetime | None = None,
    ) -> dict[str, Any]:
        """Sign and append one entry (after verifying the log so far); return it."""
        if signer.public_key().fingerprint() != self._log.verify_key.fingerprint():
            raise AuditError("the audit signer is not the log's pinned audit key")
        self.entries()
        entry: dict[str, Any] = {
            "format": AUDIT_FORMAT,
            "event": event.value,
            "at": (at or datetime.now(UTC)).replace(microsecond=0).isoformat(),
            "job_id": job_id,
            "endpoint_id": endpoint_id,
            "details": details,
        }
        return self._log.append(signer, entry)
