"""The one exit-code table of the ``tensorguard`` command.

Every sub-command (``keys``, ``tgsp``, ``agent``) returns one of these codes; each code
means one kind of outcome wherever it appears. Messages go to stderr.

====  =====================  ==================================================================
code  name                   meaning
====  =====================  ==================================================================
0     OK                     success
1     ERROR                  any other TensorGuard error (e.g. the MQTT broker is unreachable)
2     USAGE                  bad or missing arguments (``argparse`` exits with 2 itself)
3     CONFIG                 configuration missing, invalid or refused: ``TG_*`` environment,
                             agent YAML, release metadata flags, production-mode refusals,
                             a ``TG_PQC_BACKEND`` that cannot be loaded here, a
                             ``--high-water-mark`` for a channel that is not the package's
4     INPUT                  an input file cannot be used: package, key file, trust store,
                             build source, CSR or CA directory, high-water store unreadable,
                             of the wrong kind or too permissive
5     MALFORMED              malformed package (magic, version, header encoding/schema,
                             length, limits)
6     UNTRUSTED              untrusted package: unknown signer or invalid signature
7     INTEGRITY              data failed authentication: package payload or file digest,
                             chunk authentication, or a stored key record (wrong
                             ``TG_KEY_MASTER``, altered or misplaced file), or the
                             identity audit log (entry removed, reordered, altered)
8     POLICY                 policy refusal: expired, not yet valid, wrong channel, fails
                             the rollback rule (below the high-water mark, or its version
                             with another package); a CSR the CA's issuance policy refuses;
                             ``identity check``: a certificate expires within the window
9     RECIPIENT              not a recipient, or the data key does not unwrap
10    UNSAFE_PATH            unsafe path (absolute, ``..``, link, device, duplicate, case
                             collision)
11    EXTRACTION             extraction failed (destination exists or cannot be written)
12    KEY_NOT_FOUND          no key of that name in the key provider
13    KEY_EXISTS             a key of that name exists (``keys generate`` never overwrites)
14    PROVIDER_UNAVAILABLE   key provider unavailable (KMS, PKCS#11 module or python-pkcs11
                             missing)
15    TOKEN                  a PKCS#11 token operation failed
16    NOT_INSTALLED          ``agent run --once``: at least one release was rejected or
                             failed to install
17    PREFLIGHT              ``preflight``: at least one check failed (each FAIL line says
                             what to fix)
====  =====================  ==================================================================

:func:`exit_code_for` maps an exception to its code. It imports the areas' error types
only when called, so that building the parser stays free of them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from enum import IntEnum, unique

from tensorguard.errors import ConfigurationError, TensorGuardError


@unique
class ExitCode(IntEnum):
    """Process exit status of every ``tensorguard`` command (see the module table)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    CONFIG = 3
    INPUT = 4
    MALFORMED = 5
    UNTRUSTED = 6
    INTEGRITY = 7
    POLICY = 8
    RECIPIENT = 9
    UNSAFE_PATH = 10
    EXTRACTION = 11
    KEY_NOT_FOUND = 12
    KEY_EXISTS = 13
    PROVIDER_UNAVAILABLE = 14
    TOKEN = 15
    NOT_INSTALLED = 16
    PREFLIGHT = 17


def _error_table() -> tuple[tuple[type[Exception], ExitCode], ...]:
    """(error type, code) pairs; first match wins, so narrow types come before parents."""
    from tensorguard.crypto import BackendUnavailableError
    from tensorguard.digest import DigestError
    from tensorguard.identity.audit import AuditError
    from tensorguard.identity.errors import (
        CertificateAuthorityError,
        CertificateExpiryError,
        CertificateRequestError,
        IssuancePolicyError,
    )
    from tensorguard.keys import (
        KeyExistsError,
        KeyIntegrityError,
        KeyNotFoundError,
        KeyProviderUnavailable,
        TokenError,
    )
    from tensorguard.tgsp import (
        BuildError,
        ExtractionError,
        HighWaterMarkChannelError,
        HighWaterStoreError,
        IntegrityError,
        KeyFileError,
        PackageFormatError,
        PackageUnreadableError,
        PolicyError,
        RecipientError,
        TrustError,
        TrustStoreError,
        UnsafePathError,
    )

    return (
        (KeyFileError, ExitCode.INPUT),
        (TrustStoreError, ExitCode.INPUT),  # before its parent TrustError
        (PackageUnreadableError, ExitCode.INPUT),
        (BuildError, ExitCode.INPUT),
        (DigestError, ExitCode.INPUT),
        (HighWaterStoreError, ExitCode.INPUT),
        (UnsafePathError, ExitCode.UNSAFE_PATH),
        (PackageFormatError, ExitCode.MALFORMED),
        (TrustError, ExitCode.UNTRUSTED),
        (IntegrityError, ExitCode.INTEGRITY),
        (HighWaterMarkChannelError, ExitCode.CONFIG),  # before its parent PolicyError
        (PolicyError, ExitCode.POLICY),
        (RecipientError, ExitCode.RECIPIENT),
        (ExtractionError, ExitCode.EXTRACTION),
        (KeyNotFoundError, ExitCode.KEY_NOT_FOUND),
        (KeyExistsError, ExitCode.KEY_EXISTS),
        (KeyIntegrityError, ExitCode.INTEGRITY),
        (KeyProviderUnavailable, ExitCode.PROVIDER_UNAVAILABLE),
        (TokenError, ExitCode.TOKEN),
        (AuditError, ExitCode.INTEGRITY),
        (CertificateRequestError, ExitCode.INPUT),
        (CertificateAuthorityError, ExitCode.INPUT),
        (IssuancePolicyError, ExitCode.POLICY),
        (CertificateExpiryError, ExitCode.POLICY),
        (ConfigurationError, ExitCode.CONFIG),
        (BackendUnavailableError, ExitCode.CONFIG),
    )


def exit_code_for(error: TensorGuardError) -> ExitCode:
    """The documented exit code of ``error`` (``ERROR`` for any unlisted TensorGuard error)."""
    for error_type, code in _error_table():
        if isinstance(error, error_type):
            return code
    return ExitCode.ERROR


Handler = Callable[[argparse.Namespace], int]


def reporting_errors(command: str, handler: Handler) -> Handler:
    """Wrap ``handler`` so a TensorGuard error is printed to stderr and becomes its exit code.

    ``command`` names the command in the message, e.g. ``"tgsp verify"``.
    """

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except TensorGuardError as error:
            print(f"tensorguard {command}: error: {error}", file=sys.stderr)
            return exit_code_for(error)

    return run
