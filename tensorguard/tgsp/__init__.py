"""TGSP v2: TensorGuard's signed, encrypted, streamable release package.

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

from tensorguard.tgsp.builder import BuildResult, build_package
from tensorguard.tgsp.errors import (
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
from tensorguard.tgsp.format import DEFAULT_CHUNK_SIZE, DEFAULT_LIMITS, Limits
from tensorguard.tgsp.header import FileEntry, ModelIdentity, PackageHeader, ReleaseInfo
from tensorguard.tgsp.opener import OpenedPackage, open_package
from tensorguard.tgsp.reader import InspectedPackage, inspect_package
from tensorguard.tgsp.rollback import HighWaterMark, HighWaterStore
from tensorguard.tgsp.trust import TrustStore
from tensorguard.tgsp.verifier import VerificationPolicy, VerifiedPackage, verify_package

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_LIMITS",
    "BuildError",
    "BuildResult",
    "CaseCollisionError",
    "ChannelMismatchError",
    "ChunkAuthenticationError",
    "DuplicatePathError",
    "ExtractionError",
    "FileDigestError",
    "FileEntry",
    "HeaderEncodingError",
    "HeaderSchemaError",
    "HeaderTooLargeError",
    "HighWaterMark",
    "HighWaterMarkChannelError",
    "HighWaterStore",
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
    "inspect_package",
    "open_package",
    "verify_package",
]
