"""Building a TGSP v3 package: stream files in, hash, encrypt to N recipients, sign.

Inputs are read once; hashing and encryption run on worker threads
(:mod:`tensorguard.tgsp._sealing`). The header's length is fixed before the payload is
written (every digest field has a fixed width and the number of segment digests follows
from the sizes), so the builder reserves the header's space, streams the sealed payload
after it, then writes the final header and signature in place. The file
is assembled under a temporary name (:func:`tensorguard.durable.atomic_file`) and linked
to its final name only when complete; an existing file is never replaced.
Memory use is a bounded number of chunks, whatever the package size.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from tensorguard.crypto import (
    DATA_KEY_SIZE,
    CompositeSigner,
    PQCBackend,
    SignatureError,
    XWingPublicKey,
    chunk_count,
    ciphertext_length,
    wrap_key,
)
from tensorguard.durable import DestinationExistsError, DurableWriteError, atomic_file
from tensorguard.tgsp._errors import BuildError, HeaderTooLargeError
from tensorguard.tgsp._format import (
    COMPOSITE_SIGNATURE_SIZE,
    DEFAULT_CHUNK_SIZE,
    DEFAULT_LIMITS,
    DEFAULT_SEGMENT_BYTES,
    MAX_CHUNK_SIZE,
    MAX_SEGMENT_CHUNKS,
    MIN_CHUNK_SIZE,
    SIGNATURE_CONTEXT,
    SIGNATURE_LENGTH,
    Limits,
    Preamble,
    payload_offset,
)
from tensorguard.tgsp._header import (
    FileEntry,
    PackageHeader,
    PayloadInfo,
    ReleaseInfo,
    segment_count,
    sorted_recipients,
)
from tensorguard.tgsp._parallel import resolve_threads
from tensorguard.tgsp._payload import derive_payload_key
from tensorguard.tgsp._sealing import seal_files
from tensorguard.tgsp._source import collect_source_files

PACKAGE_ID_SIZE = 16
_UNKNOWN_DIGEST = "0" * 64


@dataclass(frozen=True)
class BuildResult:
    """A finished package: where it is, what its signed header says, its size."""

    path: Path
    header: PackageHeader
    package_size: int


def _check_recipients(recipients: Sequence[XWingPublicKey], limits: Limits) -> None:
    if not recipients:
        raise BuildError("a package needs at least one recipient public key")
    if len(recipients) > limits.max_recipients:
        raise HeaderTooLargeError(
            f"{len(recipients)} recipients exceed the limit of {limits.max_recipients}"
        )
    ids = [key.fingerprint() for key in recipients]
    if len(set(ids)) != len(ids):
        raise BuildError("the same recipient key is listed twice")


def choose_segment_chunks(
    chunks: int, chunk_size: int, limits: Limits, requested: int | None = None
) -> int:
    """Chunks per payload segment: ``requested``, else about 16 MiB of plaintext.

    The default grows when the payload would otherwise need more than
    ``limits.max_segments`` segments. Raises :class:`BuildError` if no allowed size fits.
    """
    if requested is not None:
        if not 1 <= requested <= MAX_SEGMENT_CHUNKS:
            raise BuildError(f"segment_chunks must be 1..{MAX_SEGMENT_CHUNKS}, got {requested}")
        chosen = requested
    else:
        chosen = max(1, DEFAULT_SEGMENT_BYTES // chunk_size, -(-chunks // limits.max_segments))
        chosen = min(chosen, MAX_SEGMENT_CHUNKS)
    if segment_count(chunks, chosen) > limits.max_segments:
        raise HeaderTooLargeError(
            f"{chunks} chunks in segments of {chosen} need {segment_count(chunks, chosen)} "
            f"segment digests; the limit is {limits.max_segments}: use larger chunks or segments"
        )
    return chosen


def _sign_header(
    signer: CompositeSigner, preamble: bytes, header_bytes: bytes, key_id: str
) -> bytes:
    signature = signer.sign(preamble + header_bytes, SIGNATURE_CONTEXT)
    if len(signature) != COMPOSITE_SIGNATURE_SIZE:
        raise BuildError(f"signer returned {len(signature)} bytes, not a composite signature")
    try:
        signer.public_key().verify(preamble + header_bytes, signature, SIGNATURE_CONTEXT)
    except SignatureError as exc:
        raise BuildError(
            f"signer {key_id[:16]} produced a signature its own public key rejects: {exc}"
        ) from exc
    return signature


def build_package(
    source: Path,
    output: Path,
    *,
    signer: CompositeSigner,
    recipients: Sequence[XWingPublicKey],
    release: ReleaseInfo,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    limits: Limits = DEFAULT_LIMITS,
    backend: PQCBackend | None = None,
    threads: int | None = None,
    segment_chunks: int | None = None,
) -> BuildResult:
    """Package ``source`` (a directory or one file) into the new file ``output``.

    ``signer`` signs the header (software key or hardware token); every key in
    ``recipients`` can open the package. Raises a :class:`~tensorguard.tgsp._errors.TGSPError`
    subclass naming the offending input on any refusal; ``output`` is then not created.
    ``threads``: worker threads for hashing and encryption (default ``TG_TGSP_THREADS``,
    else one per CPU; 1 = serial); the package's bytes do not depend on it.
    ``segment_chunks``: sealed chunks per payload segment, each with its own signed
    SHA-256 so verification hashes segments in parallel (default: about 16 MiB).
    """
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise BuildError(f"chunk size must be {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE} bytes")
    if output.exists() or output.is_symlink():
        raise BuildError(f"{output} already exists; choose another name or remove it")
    _check_recipients(recipients, limits)
    threads = resolve_threads(threads)
    files = collect_source_files(source, limits)
    key_id = signer.public_key().fingerprint()
    package_id = secrets.token_bytes(PACKAGE_ID_SIZE)
    data_key = secrets.token_bytes(DATA_KEY_SIZE)
    total = sum(item.size for item in files)
    chunks = chunk_count(total, chunk_size)
    segment_chunks = choose_segment_chunks(chunks, chunk_size, limits, segment_chunks)
    header = PackageHeader(
        package_id=package_id.hex(),
        producer_key_id=key_id,
        release=release,
        files=tuple(FileEntry(item.archive_path, item.size, _UNKNOWN_DIGEST) for item in files),
        recipients=sorted_recipients(
            [wrap_key(data_key, key, binding=package_id, backend=backend) for key in recipients]
        ),
        payload=PayloadInfo(
            chunk_size=chunk_size,
            chunk_count=chunks,
            length=ciphertext_length(total, chunk_size),
            segment_chunks=segment_chunks,
            segment_sha256=(_UNKNOWN_DIGEST,) * segment_count(chunks, segment_chunks),
        ),
    )
    header_length = len(header.encode(limits))
    try:
        with atomic_file(output, mode=0o644, overwrite=False) as sink:
            sink.seek(payload_offset(header_length))
            entries, segment_sha256 = seal_files(
                files,
                sink,
                derive_payload_key(data_key, package_id),
                package_id,
                chunk_size,
                threads,
                segment_chunks=segment_chunks,
            )
            header = replace(
                header,
                files=entries,
                payload=replace(header.payload, segment_sha256=segment_sha256),
            )
            header_bytes = header.encode(limits)
            if len(header_bytes) != header_length:
                raise BuildError("internal error: header length changed after hashing")
            preamble = Preamble(bytes.fromhex(key_id), header_length).pack()
            signature = _sign_header(signer, preamble, header_bytes, key_id)
            sink.seek(0)
            sink.write(preamble + header_bytes + SIGNATURE_LENGTH.pack(len(signature)) + signature)
            package_size = sink.seek(0, os.SEEK_END)
    except DestinationExistsError as exc:
        raise BuildError(f"{output} already exists; choose another name or remove it") from exc
    except DurableWriteError as exc:
        raise BuildError(f"cannot write {output}: {exc}") from exc
    except OSError as exc:  # a write failed: disk full, quota, file-size limit, I/O error
        raise BuildError(
            f"cannot write {output}: {exc.strerror or exc}; free space on its file system "
            "(or raise the quota / file-size limit) and build again; no package was left"
        ) from exc
    return BuildResult(output, header, package_size)
