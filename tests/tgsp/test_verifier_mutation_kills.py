"""The verifier's own decisions, at their boundaries and word for word (#18 item 6).

``tensorguard/tgsp/_verifier.py`` decides the signer, the file length and the release
policy (clock skew, expiry, channel, high-water marks). Each test builds a real package
and verifies it with ``verify_package`` at a fixed clock, one second either side of
each limit, and checks the type and full message of every refusal.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tensorguard.crypto import CompositeSigningKey
from tensorguard.tgsp import (
    ChannelMismatchError,
    HeaderTooLargeError,
    HighWaterMark,
    HighWaterMarkChannelError,
    PackageExpiredError,
    PackageNotYetValidError,
    PackageSignatureError,
    PackageTruncatedError,
    PackageUnreadableError,
    RollbackError,
    TGSPError,
    TrailingDataError,
    TrustStore,
    UnknownSignerError,
    VerificationPolicy,
    verify_package,
)
from tensorguard.tgsp._format import Limits, payload_offset
from tensorguard.tgsp._verifier import DEFAULT_CLOCK_SKEW_SECONDS, check_policy
from tests.tgsp.conftest import Packager, layout_of, make_release

CREATED = 4_000_000_000  # in 2096: "in the future" for the system clock
EXPIRES = CREATED + 7200


def refusal(path: Path, trust_store: TrustStore, policy: VerificationPolicy) -> TGSPError:
    with pytest.raises(TGSPError) as caught:
        verify_package(path, trust_store, policy)
    return caught.value


@pytest.fixture
def fixed(packager: Packager) -> Path:
    """A package created at CREATED and expiring at EXPIRES, version 7 on 'stable'."""
    return packager.build({"model.bin": b"weights"}, created_at=CREATED, expires_at=EXPIRES).path


def at(now: int, **fields: object) -> VerificationPolicy:
    return VerificationPolicy(now=now, **fields)  # type: ignore[arg-type]


def test_the_clock_skew_allows_five_minutes_and_not_a_second_more(
    fixed: Path, trust_store: TrustStore
) -> None:
    assert DEFAULT_CLOCK_SKEW_SECONDS == 300
    verify_package(fixed, trust_store, at(CREATED - 300))
    error = refusal(fixed, trust_store, at(CREATED - 301))
    assert type(error) is PackageNotYetValidError
    assert str(error) == (
        f"package was created at {CREATED}, after the current time {CREATED - 301}; "
        "check the producer's and this machine's clocks"
    )


def test_a_caller_chosen_skew_is_the_limit(fixed: Path, trust_store: TrustStore) -> None:
    verify_package(fixed, trust_store, at(CREATED, clock_skew_seconds=0))
    error = refusal(fixed, trust_store, at(CREATED - 1, clock_skew_seconds=0))
    assert type(error) is PackageNotYetValidError
    verify_package(fixed, trust_store, at(CREATED - 1000, clock_skew_seconds=1000))
    error = refusal(fixed, trust_store, at(CREATED - 1001, clock_skew_seconds=1000))
    assert type(error) is PackageNotYetValidError


def test_a_package_expires_at_its_expiry_second(fixed: Path, trust_store: TrustStore) -> None:
    verify_package(fixed, trust_store, at(EXPIRES - 1))
    for now in (EXPIRES, EXPIRES + 1):
        error = refusal(fixed, trust_store, at(now))
        assert type(error) is PackageExpiredError
        assert str(error) == f"package expired at {EXPIRES} (now {now}); request a fresh release"


def test_without_a_given_time_the_system_clock_decides(
    packager: Packager, trust_store: TrustStore, fixed: Path
) -> None:
    verify_package(packager.build({"f": b"1"}).path, trust_store)  # valid for an hour
    error = refusal(fixed, trust_store, VerificationPolicy())  # created in 2096
    assert type(error) is PackageNotYetValidError
    assert str(error).startswith(f"package was created at {CREATED}, after the current time ")
    # far in the past but never expiring before now: a package long expired is refused
    old = packager.build({"f": b"1"}, created_at=1_000_000, expires_at=2_000_000).path
    error = refusal(old, trust_store, VerificationPolicy())
    assert type(error) is PackageExpiredError
    assert str(error).startswith("package expired at 2000000 (now ")


def test_the_expected_channel_is_compared_exactly(
    packager: Packager, trust_store: TrustStore
) -> None:
    canary = packager.build({"f": b"1"}, channel="canary").path
    verify_package(canary, trust_store, VerificationPolicy(expected_channel="canary"))
    verify_package(canary, trust_store, VerificationPolicy(expected_channel=None))
    error = refusal(canary, trust_store, VerificationPolicy(expected_channel="stable"))
    assert type(error) is ChannelMismatchError
    assert str(error) == "package is for channel 'canary', expected 'stable'"


def test_marks_for_other_channels_are_refused_only_when_asked(
    fixed: Path, trust_store: TrustStore
) -> None:
    marks = {"Stable": 99, "beta": 99, "stable": 3, "alpha": 99}
    verify_package(fixed, trust_store, at(CREATED, high_water_marks=marks))
    error = refusal(
        fixed, trust_store, at(CREATED, high_water_marks=marks, marks_name_the_channel=True)
    )
    assert type(error) is HighWaterMarkChannelError
    assert str(error) == (
        "high-water mark(s) given for channel(s) ['Stable', 'alpha', 'beta'] but the package "
        "is on channel 'stable'; a mark for another channel protects nothing. Give the mark "
        "as stable=VERSION (channel names are lower-case)"
    )
    own = {"stable": 6}
    verify_package(
        fixed, trust_store, at(CREATED, high_water_marks=own, marks_name_the_channel=True)
    )
    verify_package(
        fixed, trust_store, at(CREATED, high_water_marks={}, marks_name_the_channel=True)
    )
    verify_package(fixed, trust_store, at(CREATED, marks_name_the_channel=True))


@pytest.mark.parametrize("mark", [7, HighWaterMark(7), HighWaterMark(7, "00" * 32), 8, 100])
def test_the_channels_mark_applies_the_rollback_rule(
    fixed: Path, trust_store: TrustStore, mark: int | HighWaterMark
) -> None:
    error = refusal(fixed, trust_store, at(CREATED, high_water_marks={"stable": mark}))
    assert type(error) is RollbackError
    version = mark if isinstance(mark, int) else mark.version
    assert str(error).startswith("package version 7 ")
    assert "channel 'stable'" in str(error)
    assert ("equals the high-water mark" in str(error)) == (version == 7)


@pytest.mark.parametrize("mark", [6, 0, HighWaterMark(6, "00" * 32)])
def test_a_higher_version_passes_its_mark(
    fixed: Path, trust_store: TrustStore, mark: int | HighWaterMark
) -> None:
    verify_package(fixed, trust_store, at(CREATED, high_water_marks={"stable": mark}))
    verify_package(fixed, trust_store, at(CREATED, high_water_marks={"canary": 100}))


def test_the_same_package_file_passes_a_mark_at_its_version(
    packager: Packager, trust_store: TrustStore
) -> None:
    """The digest is of the whole file (over 1 MiB, so it is read in several blocks)."""
    path = packager.build(
        {"big.bin": os.urandom(1536 * 1024)}, created_at=CREATED, expires_at=EXPIRES
    ).path
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    verify_package(
        path, trust_store, at(CREATED, high_water_marks={"stable": HighWaterMark(7, digest)})
    )
    first_mib = hashlib.sha256(data[: 1024 * 1024]).hexdigest()
    error = refusal(
        path, trust_store, at(CREATED, high_water_marks={"stable": HighWaterMark(7, first_mib)})
    )
    assert type(error) is RollbackError


def test_the_package_digest_is_computed_only_for_an_equal_version() -> None:
    release = make_release(version=7, created_at=CREATED, expires_at=EXPIRES)
    calls: list[str] = []

    def digest() -> str:
        calls.append("digest")
        return "ab" * 32

    for mark in (6, HighWaterMark(6), None):
        marks = None if mark is None else {"stable": mark}
        check_policy(release, at(CREATED, high_water_marks=marks), digest)
    assert calls == []
    check_policy(
        release, at(CREATED, high_water_marks={"stable": HighWaterMark(7, "ab" * 32)}), digest
    )
    assert calls == ["digest"]
    with pytest.raises(RollbackError, match="equals the high-water mark"):
        check_policy(release, at(CREATED, high_water_marks={"stable": HighWaterMark(7, "ab" * 32)}))
    with pytest.raises(RollbackError, match="below the high-water mark 8"):
        check_policy(release, at(CREATED, high_water_marks={"stable": 8}), digest)
    assert calls == ["digest"]


def test_a_short_or_long_file_is_refused_with_its_size(
    tmp_path: Path, fixed: Path, trust_store: TrustStore
) -> None:
    data = fixed.read_bytes()
    short = tmp_path / "short.tgsp"
    short.write_bytes(data[:-1])
    error = refusal(short, trust_store, at(CREATED))
    assert type(error) is PackageTruncatedError
    assert str(error) == (
        f"package is {len(data) - 1} bytes; its signed header requires {len(data)}"
    )
    long = tmp_path / "long.tgsp"
    long.write_bytes(data + b"abc")
    error = refusal(long, trust_store, at(CREATED))
    assert type(error) is TrailingDataError
    assert str(error) == "package has 3 bytes after its signed end"


def test_the_signer_must_be_pinned_and_its_signature_valid(
    tmp_path: Path, fixed: Path, trust_store: TrustStore, stranger: CompositeSigningKey
) -> None:
    key_id = fixed.read_bytes()[12:44].hex()
    error = refusal(fixed, TrustStore([stranger.public_key()]), at(CREATED))
    assert type(error) is UnknownSignerError
    assert str(error) == (
        f"package is signed by key {key_id}, which is not in the trust store; "
        "add the producer's public key to the trust store if it should be trusted"
    )
    data = bytearray(fixed.read_bytes())
    data[layout_of(bytes(data)).signature_start + 7] ^= 1
    forged = tmp_path / "forged.tgsp"
    forged.write_bytes(bytes(data))
    error = refusal(forged, trust_store, at(CREATED))
    assert type(error) is PackageSignatureError
    assert str(error).startswith("header signature rejected: ")
    assert str(error) == f"header signature rejected: {error.__cause__}"


def test_a_verified_package_names_its_pinned_signer_header_and_payload(
    packager: Packager, fixed: Path, trust_store: TrustStore
) -> None:
    verified = verify_package(fixed, trust_store, at(CREATED))
    header_length = layout_of(fixed.read_bytes()).header_length
    assert verified.payload_offset == payload_offset(header_length)
    assert verified.signer.fingerprint() == packager.producer.public_key().fingerprint()
    assert verified.header.release.created_at == CREATED
    assert verified.header.release.version == 7


def test_the_callers_limits_apply_to_the_header(
    packager: Packager, trust_store: TrustStore
) -> None:
    path = packager.build({"a": b"1", "b": b"2"}).path
    verify_package(path, trust_store, limits=Limits(max_files=2), threads=1)
    with pytest.raises(HeaderTooLargeError):
        verify_package(path, trust_store, limits=Limits(max_files=1))
    # the header length is refused from the preamble, before the header is read
    header_length = layout_of(path.read_bytes()).header_length
    with pytest.raises(HeaderTooLargeError) as caught:
        verify_package(path, trust_store, limits=Limits(max_header_bytes=header_length - 1))
    assert str(caught.value) == (
        f"header length {header_length} is outside 1..{header_length - 1} bytes"
    )


def test_an_unreadable_path_is_named(tmp_path: Path, trust_store: TrustStore) -> None:
    missing = tmp_path / "missing.tgsp"
    with pytest.raises(PackageUnreadableError) as caught:
        verify_package(missing, trust_store)
    assert str(caught.value) == f"cannot read {missing}: No such file or directory"
    with pytest.raises(PackageUnreadableError) as caught:
        verify_package(tmp_path, trust_store)
    assert str(caught.value) == f"cannot read {tmp_path}: Is a directory"
