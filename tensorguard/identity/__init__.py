"""Fleet identity: a private CA for edge nodes and services, and node enrolment.

* :mod:`.authority` — :class:`CertificateAuthority`: root + intermediate (keys sealed in
  the key provider), issuance from CSRs, revocation and CRLs;
* :mod:`.policy` — :class:`IssuancePolicy` and :func:`decide`: key types, SAN rules, EKU
  separation, maximum lifetime;
* :mod:`.audit` — the signed, hash-chained audit log of CA events;
* :mod:`.enrol` — what runs on the node: keys generated there, a CSR out, the
  certificate in.

See docs/IDENTITY.md. Nothing here imports Dagster.
"""

from __future__ import annotations

from tensorguard.identity.authority import CertificateAuthority
from tensorguard.identity.errors import (
    CertificateAuthorityError,
    CertificateRequestError,
    EnrolmentError,
    IdentityConfigError,
    IdentityError,
    IssuancePolicyError,
    RevocationError,
)
from tensorguard.identity.keytypes import KeyType
from tensorguard.identity.policy import IssuancePolicy, Profile, node_uri

__all__ = [
    "CertificateAuthority",
    "CertificateAuthorityError",
    "CertificateRequestError",
    "EnrolmentError",
    "IdentityConfigError",
    "IdentityError",
    "IssuancePolicy",
    "IssuancePolicyError",
    "KeyType",
    "Profile",
    "RevocationError",
    "node_uri",
]
