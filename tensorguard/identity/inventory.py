"""The certificate inventory: per endpoint, the certificate in force and its days left.

What a renewal job and an expiry check decide from (the Dagster asset and check will
call these; so does ``tensorguard identity check``). An endpoint is a node id or a
service's first name, per profile. Its certificate in force is its unrevoked certificate
that expires last — possibly already expired, which then shows as negative days left.
Endpoints whose every certificate was revoked (decommissioned) are not listed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509

from tensorguard.identity.policy import Profile
from tensorguard.identity.store import CaDirectory, IssuedRecord


@dataclass(frozen=True)
class EndpointCertificate:
    """One endpoint's certificate in force."""

    endpoint: str
    profile: Profile
    serial: str
    issuer: str
    not_after: datetime
    days_left: float
    source: str = "private-ca"

    @property
    def expired(self) -> bool:
        """True once ``not_after`` has passed."""
        return self.days_left <= 0


def endpoint_inventory(
    records: Iterable[IssuedRecord], *, issuer: str, now: datetime
) -> list[EndpointCertificate]:
    """Each endpoint's certificate in force at ``now``, soonest expiry first."""
    latest: dict[tuple[Profile, str], IssuedRecord] = {}
    for record in records:
        if record.revoked_at is not None:
            continue
        key = (record.profile, record.common_name)
        if key not in latest or record.not_after > latest[key].not_after:
            latest[key] = record
    inventory = [
        EndpointCertificate(
            endpoint=record.common_name,
            profile=record.profile,
            serial=record.serial,
            issuer=issuer,
            not_after=record.not_after,
            days_left=round(record.days_left(now), 2),
        )
        for record in latest.values()
    ]
    return sorted(inventory, key=lambda entry: (entry.not_after, entry.endpoint))


def ca_inventory(ca_dir: Path, now: datetime) -> list[EndpointCertificate]:
    """:func:`endpoint_inventory` of the CA directory ``ca_dir`` (no key is needed)."""
    store = CaDirectory(ca_dir)
    issuer = store.read_certificate(store.intermediate_file).subject.rfc4514_string()
    return endpoint_inventory(store.read_index().certificates.values(), issuer=issuer, now=now)


def expiring_within(
    inventory: Iterable[EndpointCertificate], days: float
) -> list[EndpointCertificate]:
    """The endpoints whose certificate expires within ``days`` (or already has)."""
    return [entry for entry in inventory if entry.days_left <= days]


def crls_due(
    crls: Iterable[x509.CertificateRevocationList], now: datetime, days: float
) -> list[str]:
    """Issuers whose CRL's ``nextUpdate`` is within ``days`` of ``now`` (or past, or absent).

    Past ``nextUpdate`` OpenSSL refuses *every* certificate of that issuer, so a stale
    CRL locks the fleet out of the broker: re-sign it (``tensorguard identity crl``).
    """
    due = []
    for crl in crls:
        next_update = crl.next_update_utc
        if next_update is None or (next_update - now).total_seconds() <= days * 86400:
            due.append(crl.issuer.rfc4514_string())
    return due
