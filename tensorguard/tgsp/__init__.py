"""TGSP v3: TensorGuard's signed, encrypted, streamable release package.

* :func:`build_package` — stream files in, hash, encrypt to N X-Wing recipients,
  sign the header with any :class:`~tensorguard.crypto.CompositeSigner`;
* :func:`inspect_package` — read the header and manifest without keys (unverified);
* :func:`verify_package` — signature against a pinned :class:`TrustStore`, header,
  length, expiry, channel, high-water mark and payload digest;
* :func:`open_package` — verify, decrypt, check every file digest, extract safely.

The byte layout, canonical encoding and verification order are specified in
``docs/TGSP.md``.
"""

from __future__ import annotations

from tensorguard.tgsp._builder import BuildResult, build_package
from tensorguard.tgsp._errors import (
    BuildError,
    CaseCollisionError,
    ChannelMismatchError,
    ChunkAuthenticationError,
    DuplicatePathError,
    ExtractionError,
    FileDigestError,
    HeaderEncodingError,
    HeaderSchemaError,
    HeaderTooLargeError,
    HighWaterMarkChannelError,
    HighWaterStoreError,
    IntegrityError,
    KeyFileError,
    KeyUnwrapError,
    NotARecipientError,
    NotATGSPPackageError,
    PackageExpiredError,
    PackageFormatError,
    PackageNotYetValidError,
    PackageSignatureError,
    PackageTruncatedError,
    PackageUnreadableError,
    PayloadDigestError,
    PolicyError,
    RecipientError,
    RollbackError,
    SourceChangedError,
    SpecialFileRejectedError,
    SymlinkRejectedError,
    TGSPError,
    TrailingDataError,
    TrustError,
    TrustStoreError,
    UnknownSignerError,
    UnsafePathError,
    UnsupportedFormatVersionError,
)
from tensorguard.tgsp._format import DEFAULT_CHUNK_SIZE, DEFAULT_LIMITS, Limits
from tensorguard.tgsp._freshness import (
    DEFAULT_VALIDITY_SECONDS,
    FreshnessError,
    StaleReleaseError,
    check_freshness,
    issue_freshness,
    verify_freshness,
)
from tensorguard.tgsp._header import FileEntry, ModelIdentity, PackageHeader, ReleaseInfo
from tensorguard.tgsp._keyfiles import (
    load_recipient_private_key,
    load_recipient_public_key,
    load_signing_key,
    load_verify_key,
    write_key_file,
)
from tensorguard.tgsp._opener import OpenedPackage, open_package
from tensorguard.tgsp._reader import InspectedPackage, inspect_package
from tensorguard.tgsp._rollback import (
    HighWaterMark,
    HighWaterStore,
    check_rollback,
    validate_channel,
)
from tensorguard.tgsp._source import collect_source_files
from tensorguard.tgsp._trust import TrustStore
from tensorguard.tgsp._verifier import VerificationPolicy, VerifiedPackage, verify_package

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_LIMITS",
    "DEFAULT_VALIDITY_SECONDS",
    "BuildError",
    "BuildResult",
    "CaseCollisionError",
    "ChannelMismatchError",
    "ChunkAuthenticationError",
    "DuplicatePathError",
    "ExtractionError",
    "FileDigestError",
    "FileEntry",
    "FreshnessError",
    "HeaderEncodingError",
    "HeaderSchemaError",
    "HeaderTooLargeError",
    "HighWaterMark",
    "HighWaterMarkChannelError",
    "HighWaterStore",
    "HighWaterStoreError",
    "InspectedPackage",
    "IntegrityError",
    "KeyFileError",
    "KeyUnwrapError",
    "Limits",
    "ModelIdentity",
    "NotARecipientError",
    "NotATGSPPackageError",
    "OpenedPackage",
    "PackageExpiredError",
    "PackageFormatError",
    "PackageHeader",
    "PackageNotYetValidError",
    "PackageSignatureError",
    "PackageTruncatedError",
    "PackageUnreadableError",
    "PayloadDigestError",
    "PolicyError",
    "RecipientError",
    "ReleaseInfo",
    "RollbackError",
    "SourceChangedError",
    "SpecialFileRejectedError",
    "StaleReleaseError",
    "SymlinkRejectedError",
    "TGSPError",
    "TrailingDataError",
    "TrustError",
    "TrustStore",
    "TrustStoreError",
    "UnknownSignerError",
    "UnsafePathError",
    "UnsupportedFormatVersionError",
    "VerificationPolicy",
    "VerifiedPackage",
    "build_package",
    "check_freshness",
    "check_rollback",
    "collect_source_files",
    "inspect_package",
    "issue_freshness",
    "load_recipient_private_key",
    "load_recipient_public_key",
    "load_signing_key",
    "load_verify_key",
    "open_package",
    "validate_channel",
    "verify_freshness",
    "verify_package",
    "write_key_file",
]
