"""Exception types raised by :mod:`tensorguard.identity`."""

from __future__ import annotations

from tensorguard.errors import ConfigurationError, TensorGuardError


class IdentityError(TensorGuardError):
    """Root of every deliberate failure in the identity area (CA, enrolment)."""


class CertificateRequestError(IdentityError):
    """A certificate signing request cannot be used: unreadable, malformed or its
    signature does not verify (the requester does not hold the key it names)."""


class IssuancePolicyError(IdentityError):
    """The CA's issuance policy refuses a request: key type, names, lifetime, extensions."""


class CertificateAuthorityError(IdentityError):
    """The CA directory is missing, damaged, or does not match the keys in the provider."""


class CertificateExpiryError(IdentityError):
    """An endpoint's certificate expires within the checked window (or has expired)."""


class RevocationError(IdentityError):
    """A revocation cannot be recorded (unknown serial, already revoked)."""


class EnrolmentError(IdentityError):
    """Node enrolment failed: its keys, its request, or the certificate handed back."""


class RenewalError(IdentityError):
    """A renewal job ended FAILED or ROLLED_BACK (its transitions are in the audit log)."""


class IdentityConfigError(IdentityError, ConfigurationError):
    """An identity setting (trust domain, allow-list, lifetime) is invalid."""
