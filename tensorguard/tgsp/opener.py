"""Opening a TGSP v2 package: verify, unwrap the data key, decrypt, check, extract.

Contents are written into a fresh staging directory beside ``destination``, flushed to
disk, and moved into place with one rename only after every chunk authenticated, the
stream ended with its final chunk and every file matched its signed SHA-256. On any
failure the staging directory is removed and ``destination`` is never created.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tensorguard.crypto.envelope import unwrap_key
from tensorguard.crypto.errors import CryptoError
from tensorguard.crypto.xwing import XWingPrivateKey
from tensorguard.tgsp.errors import (
    ExtractionError,
    FileDigestError,
    KeyUnwrapError,
    NotARecipientError,
    PackageUnreadableError,
)
from tensorguard.tgsp.format import DEFAULT_LIMITS, Limits
from tensorguard.tgsp.header import FileEntry, PackageHeader
from tensorguard.tgsp.payload import decrypt_payload, derive_payload_key
from tensorguard.tgsp.trust import TrustStore
from tensorguard.tgsp.verifier import VerificationPolicy, verify_handle

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class OpenedPackage:
    """The result of a successful open: where the files are and what was signed."""

    destination: Path
    header: PackageHeader
    signer_key_id: str


def recover_data_key(header: PackageHeader, recipient_key: XWingPrivateKey) -> bytes:
    """Find this recipient's key block and unwrap the package data key."""
    recipient_id = recipient_key.public_key().fingerprint()
    block = next((b for b in header.recipients if b.recipient_id == recipient_id), None)
    if block is None:
        raise NotARecipientError(
            f"this key ({recipient_id[:16]}) is not among the package's "
            f"{len(header.recipients)} recipients; ask the producer to include it"
        )
    try:
        return unwrap_key(block, recipient_key, binding=bytes.fromhex(header.package_id))
    except CryptoError as exc:
        raise KeyUnwrapError(f"cannot recover the data key: {exc}") from exc


class _StagingTree:
    """A private directory that becomes ``destination`` only on :meth:`commit`."""

    def __init__(self, destination: Path) -> None:
        if destination.exists() or destination.is_symlink():
            raise ExtractionError(f"{destination} already exists; open into a new directory")
        parent = destination.parent
        if not parent.is_dir():
            raise ExtractionError(f"parent directory {parent} does not exist")
        self.destination = destination
        self.root = Path(tempfile.mkdtemp(prefix=f".{destination.name}.tgsp-", dir=parent))
        self._directories: list[Path] = []

    def create(self, relative: str) -> BinaryIO:
        parts = relative.split("/")
        directory = self.root
        for part in parts[:-1]:
            directory = directory / part
            if not directory.is_dir():
                os.mkdir(directory, 0o755)
                self._directories.append(directory)
        descriptor = os.open(directory / parts[-1], _FILE_FLAGS, 0o644)
        return os.fdopen(descriptor, "wb")

    def commit(self) -> None:
        """Make the tree durable, then move it into place with one rename."""
        for directory in [*reversed(self._directories), self.root]:
            _fsync_directory(directory)
        # mkdtemp made the tree private; extracted releases are world-readable like a
        # normally created directory, so services running as other users can load them.
        os.chmod(self.root, 0o755)  # noqa: S103
        try:
            os.rename(self.root, self.destination)
        except OSError as exc:
            raise ExtractionError(
                f"cannot move verified files to {self.destination}: {exc.strerror or exc}"
            ) from exc
        _fsync_directory(self.destination.parent)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _extract(chunks: Iterator[bytes], files: tuple[FileEntry, ...], staging: _StagingTree) -> None:
    pending = memoryview(b"")
    for entry in files:
        digest = hashlib.sha256()
        remaining = entry.size
        with staging.create(entry.path) as sink:
            while remaining:
                if not pending:
                    pending = memoryview(next(chunks, b""))
                    if not pending:
                        raise FileDigestError(f"{entry.path}: payload ended before the file did")
                piece = pending[:remaining]
                sink.write(piece)
                digest.update(piece)
                pending = pending[len(piece) :]
                remaining -= len(piece)
            sink.flush()
            os.fsync(sink.fileno())
        if digest.hexdigest() != entry.sha256:
            raise FileDigestError(
                f"{entry.path}: SHA-256 of the decrypted file differs from the signed manifest"
            )
    extra = len(pending)
    for leftover in chunks:  # drain: runs the final-chunk and payload-digest checks
        extra += len(leftover)
    if extra:
        raise FileDigestError("payload holds bytes beyond the files in the manifest")


def open_package(
    path: Path,
    destination: Path,
    *,
    recipient_key: XWingPrivateKey,
    trust_store: TrustStore,
    policy: VerificationPolicy | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> OpenedPackage:
    """Verify ``path``, decrypt it with ``recipient_key`` and extract into ``destination``.

    ``destination`` must not exist yet. Returns the signed header so the caller can
    record the new high-water mark (``header.release.channel``/``.version``).
    """
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise PackageUnreadableError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        verified = verify_handle(handle, trust_store, policy or VerificationPolicy(), limits)
        header = verified.header
        data_key = recover_data_key(header, recipient_key)
        package_id = bytes.fromhex(header.package_id)
        staging = _StagingTree(destination)
        try:
            handle.seek(verified.payload_offset)
            chunks = decrypt_payload(
                handle, header.payload, derive_payload_key(data_key, package_id), package_id
            )
            _extract(chunks, header.files, staging)
            staging.commit()
        except BaseException:
            staging.discard()
            raise
    return OpenedPackage(destination, header, verified.signer.fingerprint())
