"""Verifying a TGSP v3 package against pinned keys, in a fixed order.

1. Preamble: magic, format version, flags, header length within limits and file size.
2. Signer: the preamble's key id must be pinned in the trust store (before parsing).
3. Signature: the composite signature over preamble || header must verify (both
   ML-DSA-65 and Ed25519 components).
4. Header: canonical JSON, schema, path rules, and the same key id as the preamble.
5. Length: the file must end exactly where the header says the payload ends.
6. Policy: creation time not in the future, not expired, expected channel, and the one
   rollback rule of :mod:`tensorguard.tgsp._rollback` against the caller's high-water
   mark for the channel (strictly greater, or the same version only for the very same
   package file).
7. Payload: the SHA-256 of each segment of the encrypted payload must equal its signed
   digest (segments hashed on worker threads).

Only after all seven pass does :mod:`tensorguard.tgsp._opener` decrypt a segment: it runs
steps 1-6 (:func:`verify_header`), then step 7 segment by segment, each segment's digest
compared right before that segment (read once, into memory) is decrypted.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tensorguard.crypto import CompositeVerifyKey, SignatureError
from tensorguard.tgsp._errors import (
    ChannelMismatchError,
    HighWaterMarkChannelError,
    PackageExpiredError,
    PackageNotYetValidError,
    PackageSignatureError,
    PackageTruncatedError,
    PackageUnreadableError,
    TrailingDataError,
    UnknownSignerError,
)
from tensorguard.tgsp._format import DEFAULT_LIMITS, SIGNATURE_CONTEXT, Limits
from tensorguard.tgsp._header import PackageHeader, ReleaseInfo
from tensorguard.tgsp._payload import check_payload_digest
from tensorguard.tgsp._reader import PackagePrefix, parse_header, read_prefix
from tensorguard.tgsp._rollback import HighWaterMark, check_rollback
from tensorguard.tgsp._trust import TrustStore

DEFAULT_CLOCK_SKEW_SECONDS = 300


@dataclass(frozen=True)
class VerificationPolicy:
    """What the caller requires beyond authenticity.

    ``high_water_marks`` maps a channel to its high-water mark: the version installed
    last (a bare ``int`` is a mark without a package digest) and, as a
    :class:`~tensorguard.tgsp._rollback.HighWaterMark`, that package's SHA-256. The rule
    is :func:`~tensorguard.tgsp._rollback.check_rollback`. With ``marks_name_the_channel``
    every mark must be for the package's own channel (a mark for any other channel is a
    caller's mistake, e.g. a misspelt channel, and is refused instead of ignored).
    ``now`` overrides the clock (Unix seconds) for tests and for offline verification at
    a recorded time.
    """

    now: int | None = None
    expected_channel: str | None = None
    high_water_marks: Mapping[str, HighWaterMark | int] | None = None
    clock_skew_seconds: int = DEFAULT_CLOCK_SKEW_SECONDS
    marks_name_the_channel: bool = False


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose signature, header, length, policy and payload digest all passed."""

    header: PackageHeader
    signer: CompositeVerifyKey
    payload_offset: int


def check_signer(prefix: PackagePrefix, trust_store: TrustStore) -> CompositeVerifyKey:
    """Steps 2-3: find the pinned key and verify the composite header signature."""
    key = trust_store.get(prefix.key_id)
    if key is None:
        raise UnknownSignerError(
            f"package is signed by key {prefix.key_id}, which is not in the trust store; "
            "add the producer's public key to the trust store if it should be trusted"
        )
    try:
        key.verify(prefix.signed_bytes, prefix.signature, SIGNATURE_CONTEXT)
    except SignatureError as exc:
        raise PackageSignatureError(f"header signature rejected: {exc}") from exc
    return key


def check_length(prefix: PackagePrefix, header: PackageHeader) -> None:
    """Step 5: the file ends exactly where the signed header says."""
    expected = prefix.payload_offset + header.payload.length
    if prefix.file_size < expected:
        raise PackageTruncatedError(
            f"package is {prefix.file_size} bytes; its signed header requires {expected}"
        )
    if prefix.file_size > expected:
        raise TrailingDataError(
            f"package has {prefix.file_size - expected} bytes after its signed end"
        )


def check_policy(
    release: ReleaseInfo,
    policy: VerificationPolicy,
    package_digest: Callable[[], str] | None = None,
) -> None:
    """Step 6: validity window, channel and rollback protection.

    ``package_digest`` returns the SHA-256 of the package file; it is called only when
    the version equals the channel's mark (the one case the rule needs it).
    """
    now = int(time.time()) if policy.now is None else policy.now
    if release.created_at > now + policy.clock_skew_seconds:
        raise PackageNotYetValidError(
            f"package was created at {release.created_at}, after the current time {now}; "
            "check the producer's and this machine's clocks"
        )
    if now >= release.expires_at:
        raise PackageExpiredError(
            f"package expired at {release.expires_at} (now {now}); request a fresh release"
        )
    if policy.expected_channel is not None and release.channel != policy.expected_channel:
        raise ChannelMismatchError(
            f"package is for channel {release.channel!r}, expected {policy.expected_channel!r}"
        )
    marks = policy.high_water_marks or {}
    if policy.marks_name_the_channel:
        foreign = sorted(channel for channel in marks if channel != release.channel)
        if foreign:
            raise HighWaterMarkChannelError(
                f"high-water mark(s) given for channel(s) {foreign} but the package is on "
                f"channel {release.channel!r}; a mark for another channel protects nothing. "
                f"Give the mark as {release.channel}=VERSION (channel names are lower-case)"
            )
    given = marks.get(release.channel)
    mark = HighWaterMark(given) if isinstance(given, int) else given
    digest = None
    if mark is not None and release.version == mark.version and package_digest is not None:
        digest = package_digest()
    check_rollback(release.channel, release.version, digest, mark)


def _file_digest(handle: BinaryIO) -> str:
    handle.seek(0)
    hasher = hashlib.sha256()
    while block := handle.read(1024 * 1024):
        hasher.update(block)
    return hasher.hexdigest()


@dataclass(frozen=True)
class VerifiedHeader:
    """A package whose steps 1-6 passed: its payload's segment digests are still unchecked."""

    header: PackageHeader
    signer: CompositeVerifyKey
    payload_offset: int


def verify_header(
    handle: BinaryIO,
    trust_store: TrustStore,
    policy: VerificationPolicy,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedHeader:
    """Run steps 1-6 on an open package file (positioned at 0): all but the payload.

    The caller must check every payload segment against ``header.payload.segment_sha256``
    before it uses any payload byte: :func:`verify_handle` hashes them all, the one-pass
    opener (:mod:`tensorguard.tgsp._unsealing`) each segment right before decrypting it.
    """
    prefix = read_prefix(handle, limits)
    signer = check_signer(prefix, trust_store)
    header = parse_header(prefix, limits)
    check_length(prefix, header)
    check_policy(header.release, policy, lambda: _file_digest(handle))
    return VerifiedHeader(header, signer, prefix.payload_offset)


def verify_handle(
    handle: BinaryIO,
    trust_store: TrustStore,
    policy: VerificationPolicy,
    limits: Limits = DEFAULT_LIMITS,
    threads: int | None = None,
) -> VerifiedPackage:
    """Run all verification steps on an open package file (positioned at 0).

    ``threads``: see :func:`tensorguard.tgsp._parallel.resolve_threads`.
    """
    verified = verify_header(handle, trust_store, policy, limits)
    check_payload_digest(handle, verified.payload_offset, verified.header.payload, threads)
    return VerifiedPackage(verified.header, verified.signer, verified.payload_offset)


def verify_package(
    path: Path,
    trust_store: TrustStore,
    policy: VerificationPolicy | None = None,
    limits: Limits = DEFAULT_LIMITS,
    threads: int | None = None,
) -> VerifiedPackage:
    """Verify the package at ``path``; raise a specific ``TGSPError`` on any failure."""
    try:
        with path.open("rb", buffering=0) as handle:
            return verify_handle(
                handle, trust_store, policy or VerificationPolicy(), limits, threads
            )
    except OSError as exc:
        raise PackageUnreadableError(f"cannot read {path}: {exc.strerror or exc}") from exc
