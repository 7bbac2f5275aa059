"""Exception types of the fleet service (:mod:`tensorguard.service`)."""

from __future__ import annotations

from tensorguard.errors import ConfigurationError, TensorGuardError


class ServiceError(TensorGuardError):
    """Root of every deliberate failure in the fleet service."""


class ServiceConfigError(ServiceError, ConfigurationError):
    """The service's settings are missing, invalid or refused (production rules)."""


class AuthenticationError(ServiceError):
    """A request's credentials are missing, malformed, expired, replayed or do not verify.

    The message says what was wrong with the credentials, never their value.
    """


class PermissionDeniedError(ServiceError):
    """Authenticated, but the role or node identity does not allow this request."""


class UnknownNodeError(ServiceError):
    """No edge node with that id is enrolled with the service."""


class NodeAlreadyEnrolledError(ServiceError):
    """The node id is already enrolled; enrolment never replaces a key silently."""


class NoTelemetryError(ServiceError):
    """No real telemetry arrived in the window, so there is nothing to report."""


class InvalidRevocationError(ServiceError):
    """The token given for revocation is not one of this service's valid tokens."""


class UnknownPackageError(ServiceError):
    """The registry has no release with that channel and version."""


class EvaluatorAlreadyEnrolledError(ServiceError):
    """The evaluator name or key is already enrolled; enrolment never replaces a key."""


class SafetyRecordIntegrityError(ServiceError):
    """A stored safety evaluation no longer verifies: the database row was changed."""


class UnknownConnectorError(ServiceError):
    """No connector with that name is configured."""


class ConnectorExistsError(ServiceError):
    """A connector with that name already exists."""


class ApproverAlreadyEnrolledError(ServiceError):
    """The approver name or key is already enrolled; enrolment never replaces a key."""


class ApprovalIntegrityError(ServiceError):
    """A stored deployment approval no longer verifies: the database row was changed."""


class MissingApprovalError(ServiceError):
    """A deployment needs a signed approval of the release and none is recorded."""


class RevocationCheckError(ServiceError):
    """A node certificate's revocation status cannot be decided: the CRL file is
    unreadable, has no valid CRL from the certificate's issuer, or is past its
    ``nextUpdate``. Node requests are refused (503) until a current CRL is in place."""
