"""Exception types raised by :mod:`tensorguard.tgsp`, one per reason for rejection.

The hierarchy lets callers react by category (a CLI maps each to an exit code) while
tests assert the precise reason a package was refused.
"""

from __future__ import annotations

from tensorguard.errors import TensorGuardError


class TGSPError(TensorGuardError):
    """Root of every TGSP failure."""


# --- structure -----------------------------------------------------------------------
class PackageFormatError(TGSPError):
    """The bytes are not a well-formed TGSP v3 package."""


class NotATGSPPackageError(PackageFormatError):
    """The file does not start with the TGSP magic bytes."""


class UnsupportedFormatVersionError(PackageFormatError):
    """The package uses a format version this reader does not implement."""


class HeaderTooLargeError(PackageFormatError):
    """A header (or its file list, recipients) exceeds the configured limits."""


class HeaderEncodingError(PackageFormatError):
    """The header is not canonical JSON (RFC 8785 subset used by TGSP)."""


class HeaderSchemaError(PackageFormatError):
    """The header is canonical JSON but a field is missing, unknown or invalid."""


class PackageTruncatedError(PackageFormatError):
    """The file ends before the length its header commits to."""


class TrailingDataError(PackageFormatError):
    """The file continues after the end its header commits to."""


# --- paths ---------------------------------------------------------------------------
class UnsafePathError(TGSPError):
    """A file path could escape the extraction root or is not portable."""


class DuplicatePathError(UnsafePathError):
    """Two files have the same path, or one path is a directory of another."""


class CaseCollisionError(UnsafePathError):
    """Two paths differ only in letter case (they collide on case-insensitive disks)."""


class SymlinkRejectedError(UnsafePathError):
    """A symbolic link was found where only regular files are allowed."""


class SpecialFileRejectedError(UnsafePathError):
    """A device, FIFO or socket was found where only regular files are allowed."""


# --- trust ---------------------------------------------------------------------------
class TrustError(TGSPError):
    """The package's signer is not trusted or its signature does not verify."""


class UnknownSignerError(TrustError):
    """The producer key id is not pinned in the trust store."""


class PackageSignatureError(TrustError):
    """The composite header signature does not verify."""


class TrustStoreError(TrustError):
    """A trust store file is malformed or inconsistent."""


# --- integrity -----------------------------------------------------------------------
class IntegrityError(TGSPError):
    """Signed digests do not match the bytes present."""


class PayloadDigestError(IntegrityError):
    """The encrypted payload's SHA-256 differs from the signed value."""


class FileDigestError(IntegrityError):
    """A decrypted file's SHA-256 or size differs from the signed manifest."""


class ChunkAuthenticationError(IntegrityError):
    """A payload chunk failed AES-GCM authentication."""


# --- policy --------------------------------------------------------------------------
class PolicyError(TGSPError):
    """The package is authentic but the caller's policy refuses it."""


class PackageExpiredError(PolicyError):
    """The package's expiry time has passed."""


class PackageNotYetValidError(PolicyError):
    """The package's creation time is in the future (beyond the allowed clock skew)."""


class RollbackError(PolicyError):
    """The package fails the rollback rule: a version below the channel's high-water
    mark, or the mark's version carried by a different package."""


class HighWaterStoreError(TGSPError):
    """The node's high-water store cannot be read, does not validate, or cannot be saved."""


class HighWaterMarkChannelError(PolicyError):
    """A high-water mark names a channel other than the package's (a caller's mistake)."""


class ChannelMismatchError(PolicyError):
    """The package was released on a different channel than the caller expects."""


# --- recipients ----------------------------------------------------------------------
class RecipientError(TGSPError):
    """The data key could not be recovered for this recipient."""


class NotARecipientError(RecipientError):
    """The package has no key block for the given recipient key."""


class KeyUnwrapError(RecipientError):
    """This recipient's key block does not unwrap (altered, swapped or copied)."""


# --- local I/O -----------------------------------------------------------------------
class BuildError(TGSPError):
    """A package could not be built from the given inputs."""


class SourceChangedError(BuildError):
    """An input file changed while it was being packaged."""


class ExtractionError(TGSPError):
    """Verified contents could not be written to the destination."""


class PackageUnreadableError(TGSPError):
    """The package file cannot be opened or read (missing, permissions, I/O error)."""


class KeyFileError(TGSPError):
    """A key or trust-store file is missing, malformed or too permissive."""
