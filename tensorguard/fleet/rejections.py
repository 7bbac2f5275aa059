"""Why an edge agent did not install a release, as an exception and a reason code.

:class:`InstallRefused` carries the :class:`~tensorguard.fleet.messages.InstallOutcome`
(``rejected``: the package or announcement is not acceptable; ``failed``: a local
problem prevented the install) and the machine-readable
:class:`~tensorguard.fleet.messages.InstallReason` reported over MQTT.
:func:`refusal_from_tgsp` maps each TGSP verification or opening error to one.
"""

from __future__ import annotations

import tensorguard.tgsp as tgsp
from tensorguard.fleet.errors import AgentError
from tensorguard.fleet.messages import InstallOutcome, InstallReason

_REJECTED = InstallOutcome.REJECTED
_FAILED = InstallOutcome.FAILED

# Most specific first: the first matching class decides.
_TGSP_REASONS: tuple[tuple[type[tgsp.TGSPError], InstallOutcome, InstallReason, str], ...] = (
    (
        tgsp.NotATGSPPackageError,
        _REJECTED,
        InstallReason.UNSIGNED,
        "the file is not a signed TGSP v3 package",
    ),
    (
        tgsp.UnknownSignerError,
        _REJECTED,
        InstallReason.UNTRUSTED_SIGNER,
        "the package is signed by a key this node does not trust",
    ),
    (
        tgsp.PackageSignatureError,
        _REJECTED,
        InstallReason.BAD_SIGNATURE,
        "the package signature does not verify",
    ),
    (tgsp.PackageExpiredError, _REJECTED, InstallReason.EXPIRED, "the package has expired"),
    (
        tgsp.PackageNotYetValidError,
        _REJECTED,
        InstallReason.NOT_YET_VALID,
        "the package is not valid yet",
    ),
    (
        tgsp.RollbackError,
        _REJECTED,
        InstallReason.ROLLBACK,
        "the package would roll the channel back",
    ),
    (
        tgsp.ChannelMismatchError,
        _REJECTED,
        InstallReason.WRONG_CHANNEL,
        "the package was signed for another channel",
    ),
    (
        tgsp.RecipientError,
        _REJECTED,
        InstallReason.NOT_A_RECIPIENT,
        "the package is not encrypted to this node",
    ),
    (
        tgsp.IntegrityError,
        _REJECTED,
        InstallReason.TAMPERED,
        "the package contents do not match their signed digests",
    ),
    (
        tgsp.PackageTruncatedError,
        _REJECTED,
        InstallReason.TAMPERED,
        "the package is shorter than its signed length",
    ),
    (
        tgsp.TrailingDataError,
        _REJECTED,
        InstallReason.TAMPERED,
        "the package has data after its signed end",
    ),
    (
        tgsp.UnsafePathError,
        _REJECTED,
        InstallReason.UNSAFE_CONTENT,
        "the package contains an unsafe path",
    ),
    (
        tgsp.PackageFormatError,
        _REJECTED,
        InstallReason.MALFORMED_PACKAGE,
        "the package is malformed",
    ),
    (tgsp.TGSPError, _FAILED, InstallReason.INSTALL_FAILED, "the package could not be opened"),
)


class InstallRefused(AgentError):
    """A release was not installed; ``outcome`` and ``reason_code`` say how and why."""

    def __init__(self, outcome: InstallOutcome, reason_code: InstallReason, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.reason_code = reason_code


def rejected(reason_code: InstallReason, message: str) -> InstallRefused:
    """The package or announcement is not acceptable."""
    return InstallRefused(InstallOutcome.REJECTED, reason_code, message)


def failed(reason_code: InstallReason, message: str) -> InstallRefused:
    """A local problem (disk, permissions, unreachable file) prevented the install."""
    return InstallRefused(InstallOutcome.FAILED, reason_code, message)


def refusal_from_tgsp(error: tgsp.TGSPError) -> InstallRefused:
    """The refusal that a TGSP error amounts to, with a summary and the TGSP detail."""
    for error_type, outcome, reason_code, summary in _TGSP_REASONS:
        if isinstance(error, error_type):
            return InstallRefused(outcome, reason_code, f"{summary}: {error}")
    raise AssertionError("unreachable: TGSPError is the last entry")  # pragma: no cover
