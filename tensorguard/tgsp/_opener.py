"""Opening a TGSP v3 package: verify, unwrap the data key, decrypt, check, extract.

After the header checks (steps 1-6 of :mod:`tensorguard.tgsp._verifier`), the payload is
read once (:mod:`tensorguard.tgsp._unsealing`): each segment is read into memory, its
SHA-256 compared with the signed digest, and only then are those same bytes decrypted,
hashed per file and written. A payload whose segments are too large for that
(:func:`~tensorguard.tgsp._unsealing.fits_single_pass`, more than about 1 TiB) is verified
whole first and decrypted in a second pass, as before.

Contents are written into a fresh staging directory beside ``destination`` and published
with :func:`tensorguard.durable.atomic_directory` (flushed to disk, one rename) only after
every chunk authenticated, the stream ended with its final chunk and every file matched
its signed SHA-256. On any failure the staging directory is removed and ``destination``
is never created.

The decrypted tree is private by default: files 0600 and directories 0700 (the umask can
only narrow that), since it holds what the package encrypted. ``readable_by_all=True``
(CLI ``tgsp open --readable-by-all``) widens it to 0644/0755 for a service that runs as
another user and must load the release.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tensorguard.crypto import ChunkCipher, CryptoError, XWingPrivateKey, unwrap_key
from tensorguard.durable import DestinationExistsError, atomic_directory
from tensorguard.tgsp._errors import (
    ExtractionError,
    FileDigestError,
    KeyUnwrapError,
    NotARecipientError,
    PackageUnreadableError,
)
from tensorguard.tgsp._format import DEFAULT_LIMITS, Limits
from tensorguard.tgsp._header import FileEntry, PackageHeader
from tensorguard.tgsp._parallel import Workers, Writeback, resolve_threads
from tensorguard.tgsp._payload import check_payload_digest, decrypt_payload, derive_payload_key
from tensorguard.tgsp._trust import TrustStore
from tensorguard.tgsp._unsealing import fits_single_pass, open_segments
from tensorguard.tgsp._verifier import VerificationPolicy, verify_header

_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
PRIVATE_MODES = (0o600, 0o700)
"""(file mode, directory mode) of an extracted tree by default."""
READABLE_BY_ALL_MODES = (0o644, 0o755)
"""(file mode, directory mode) with ``readable_by_all=True``."""


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


def _check_destination(destination: Path) -> None:
    if destination.exists() or destination.is_symlink():
        raise ExtractionError(f"{destination} already exists; open into a new directory")
    if not destination.parent.is_dir():
        raise ExtractionError(f"parent directory {destination.parent} does not exist")


def _create_file(root: Path, relative: str, modes: tuple[int, int]) -> BinaryIO:
    """Create the new file ``relative`` (and its missing directories) under ``root``."""
    file_mode, directory_mode = modes
    parts = relative.split("/")
    directory = root
    for part in parts[:-1]:
        directory = directory / part
        if not directory.is_dir():
            os.mkdir(directory, directory_mode)
    descriptor = os.open(directory / parts[-1], _FILE_FLAGS, file_mode)
    return os.fdopen(descriptor, "wb")


def _extract(
    chunks: Iterator[bytes | memoryview],
    files: tuple[FileEntry, ...],
    root: Path,
    modes: tuple[int, int],
    threads: int = 1,
) -> None:
    """Write the plaintext into the manifest's files and check each file's SHA-256.

    A lane hashes each piece while this thread writes it; the next chunk is requested
    only once the current one is hashed (the decryptor then reuses its buffer). Another
    lane starts flushing written files to disk as they grow
    (:class:`~tensorguard.tgsp._parallel.Writeback`); the tree is still fsynced as a whole
    before it is published.
    """
    pending = memoryview(b"")
    hashed: Future[None] | None = None
    workers = Workers(threads, lanes=2)
    # Writeback exits last: after the lanes stopped, it closes what they never flushed.
    with Writeback(workers, lane=1) as writeback, workers:
        for entry in files:
            digest = hashlib.sha256()
            remaining = entry.size
            with _create_file(root, entry.path, modes) as sink:
                while remaining:
                    if not pending:
                        if hashed is not None:
                            hashed.result()
                        pending = memoryview(next(chunks, b""))
                        if not pending:
                            raise FileDigestError(
                                f"{entry.path}: payload ended before the file did"
                            )
                    piece = pending[:remaining]
                    hashed = workers.in_lane(0, digest.update, piece)
                    sink.write(piece)
                    writeback.wrote(sink.fileno(), len(piece))
                    pending = pending[len(piece) :]
                    remaining -= len(piece)
                sink.flush()
                writeback.file_done(sink.fileno())
            if hashed is not None:
                hashed.result()  # the lane is ordered: every earlier update is done too
            if digest.hexdigest() != entry.sha256:
                raise FileDigestError(
                    f"{entry.path}: SHA-256 of the decrypted file differs from the signed manifest"
                )
        writeback.finish()
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
    readable_by_all: bool = False,
    threads: int | None = None,
) -> OpenedPackage:
    """Verify ``path``, decrypt it with ``recipient_key`` and extract into ``destination``.

    ``destination`` must not exist yet. The tree is 0600/0700 unless ``readable_by_all``
    (0644/0755). Returns the signed header so the caller can record the new high-water
    mark (``header.release.channel``/``.version``). ``threads``: worker threads for
    hashing and decryption (see :func:`tensorguard.tgsp._parallel.resolve_threads`).
    Every payload segment's signed SHA-256 is checked before any of its chunks is
    decrypted, and nothing of a segment is written before all its chunks authenticated.
    """
    threads = resolve_threads(threads)
    modes = READABLE_BY_ALL_MODES if readable_by_all else PRIVATE_MODES
    try:
        handle = path.open("rb", buffering=0)  # no read-ahead buffer: reads see the file
    except OSError as exc:
        raise PackageUnreadableError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        verified = verify_header(handle, trust_store, policy or VerificationPolicy(), limits)
        header = verified.header
        single_pass = fits_single_pass(header.payload)
        if not single_pass:  # step 7 for the whole payload now; decryption reads it again
            check_payload_digest(handle, verified.payload_offset, header.payload, threads)
        data_key = recover_data_key(header, recipient_key)
        package_id = bytes.fromhex(header.package_id)
        key = derive_payload_key(data_key, package_id)
        _check_destination(destination)
        try:
            with atomic_directory(destination, replace=False, mode=modes[1]) as root:
                if single_pass:
                    open_segments(
                        handle,
                        verified.payload_offset,
                        header.payload,
                        header.files,
                        ChunkCipher(key, package_id, header.payload.chunk_size),
                        lambda relative: _create_file(root, relative, modes),
                        threads,
                    )
                else:
                    handle.seek(verified.payload_offset)
                    chunks = decrypt_payload(
                        handle, header.payload, key, package_id, threads=threads
                    )
                    with closing(chunks):  # on a refusal, stop its worker threads at once
                        _extract(chunks, header.files, root, modes, threads)
        except DestinationExistsError as exc:
            raise ExtractionError(
                f"{destination} already exists; open into a new directory"
            ) from exc
        except OSError as exc:  # disk full, quota, file-size limit, I/O error
            raise ExtractionError(
                f"cannot extract {path} into {destination}: {exc.strerror or exc}; free space "
                "on that file system (or raise the quota / file-size limit) and open again; "
                "nothing was extracted"
            ) from exc
    return OpenedPackage(destination, header, verified.signer.fingerprint())
