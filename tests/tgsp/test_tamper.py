"""Every alteration of a package is refused, each with its specific error."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.crypto._backends.base import MLDSA65_SIGNATURE_SIZE
from tensorguard.tgsp import (
    ChannelMismatchError,
    HeaderTooLargeError,
    KeyUnwrapError,
    NotATGSPPackageError,
    PackageExpiredError,
    PackageFormatError,
    PackageNotYetValidError,
    PackageSignatureError,
    PackageTruncatedError,
    PayloadDigestError,
    RollbackError,
    TGSPError,
    TrailingDataError,
    TrustStore,
    UnknownSignerError,
    UnsupportedFormatVersionError,
    VerificationPolicy,
    open_package,
    verify_package,
)
from tensorguard.tgsp._format import Limits
from tests.tgsp.conftest import (
    SMALL_CHUNK,
    Packager,
    chunk_ends,
    header_object,
    layout_of,
    resign,
)

CHUNKED_FILES = {"a.bin": os.urandom(3 * SMALL_CHUNK + 100), "b/c.bin": os.urandom(SMALL_CHUNK)}


@pytest.fixture
def package(packager: Packager) -> bytes:
    return packager.build(CHUNKED_FILES, recipients=packager.recipients[:2]).path.read_bytes()


def write(tmp_path: Path, data: bytes, name: str = "tampered.tgsp") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def open_bytes(
    tmp_path: Path,
    data: bytes,
    recipient: XWingPrivateKey,
    trust_store: TrustStore,
    policy: VerificationPolicy | None = None,
) -> None:
    path = write(tmp_path, data)
    destination = tmp_path / "out"
    try:
        open_package(
            path, destination, recipient_key=recipient, trust_store=trust_store, policy=policy
        )
    finally:
        assert not destination.exists() or destination.is_dir()


def flip(data: bytes, position: int, mask: int = 0x01) -> bytes:
    altered = bytearray(data)
    altered[position] ^= mask
    return bytes(altered)


def test_untampered_package_opens(
    tmp_path: Path, package: bytes, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    open_bytes(tmp_path, package, recipients[0], trust_store)
    assert (tmp_path / "out" / "a.bin").read_bytes() == CHUNKED_FILES["a.bin"]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.data())
def test_any_single_byte_flip_is_refused(
    tmp_path: Path,
    package: bytes,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    data: st.DataObject,
) -> None:
    position = data.draw(st.integers(0, len(package) - 1), label="position")
    mask = data.draw(st.integers(1, 255), label="xor")
    destination = tmp_path / f"out-{position}-{mask}"
    path = write(tmp_path, flip(package, position, mask), f"flip-{position}-{mask}.tgsp")
    with pytest.raises(TGSPError) as caught:
        open_package(path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert type(caught.value) is not TGSPError  # always a specific reason
    assert not destination.exists()


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ("magic", NotATGSPPackageError),
        ("version", UnsupportedFormatVersionError),
        ("flags", PackageFormatError),
        ("key_id", UnknownSignerError),
        ("header", PackageSignatureError),
        ("signature_length", PackageSignatureError),
        ("mldsa_signature", PackageSignatureError),
        ("ed25519_signature", PackageSignatureError),
        ("payload_first", PayloadDigestError),
        ("payload_last", PayloadDigestError),
    ],
)
def test_flip_in_each_region_has_its_own_error(
    tmp_path: Path,
    package: bytes,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    region: str,
    expected: type[TGSPError],
) -> None:
    layout = layout_of(package)
    positions = {
        "magic": 0,
        "version": 9,
        "flags": 11,
        "key_id": 20,
        "header": layout.header_start + layout.header_length // 2,
        "signature_length": layout.signature_start - 1,
        "mldsa_signature": layout.signature_start + 100,
        "ed25519_signature": layout.signature_start + MLDSA65_SIGNATURE_SIZE + 10,
        "payload_first": layout.payload_start,
        "payload_last": layout.size - 1,
    }
    with pytest.raises(expected):
        open_bytes(tmp_path, flip(package, positions[region]), recipients[0], trust_store)


def test_header_length_field_flips_are_refused(
    tmp_path: Path, package: bytes, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    for position in range(44, 48):
        for mask in (0x01, 0x80):
            with pytest.raises((HeaderTooLargeError, PackageTruncatedError, PackageSignatureError)):
                open_bytes(tmp_path, flip(package, position, mask), recipients[0], trust_store)


def test_truncation_at_every_chunk_boundary_is_refused(
    tmp_path: Path, package: bytes, trust_store: TrustStore
) -> None:
    layout = layout_of(package)
    boundaries = chunk_ends(package)
    assert len(boundaries) >= 5
    for cut in [*boundaries[:-1], layout.payload_start, layout.size - 1]:
        with pytest.raises(PackageTruncatedError):
            verify_package(write(tmp_path, package[:cut]), trust_store)


def test_truncation_inside_the_prefix_is_refused(
    tmp_path: Path, package: bytes, trust_store: TrustStore
) -> None:
    layout = layout_of(package)
    for cut in (1, 8, 47, 48, layout.header_start + 10, layout.signature_start + 5):
        with pytest.raises((PackageTruncatedError, NotATGSPPackageError)):
            verify_package(write(tmp_path, package[:cut]), trust_store)
    with pytest.raises(NotATGSPPackageError):
        verify_package(write(tmp_path, b""), trust_store)


def test_trailing_data_is_refused(tmp_path: Path, package: bytes, trust_store: TrustStore) -> None:
    with pytest.raises(TrailingDataError):
        verify_package(write(tmp_path, package + b"\x00"), trust_store)


def _payload_chunks(package: bytes) -> tuple[bytes, list[bytes]]:
    layout = layout_of(package)
    boundaries = [layout.payload_start, *chunk_ends(package)]
    chunks = [package[start:end] for start, end in itertools.pairwise(boundaries)]
    return package[: layout.payload_start], chunks


def test_reordered_chunks_are_refused(
    tmp_path: Path, package: bytes, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    prefix, chunks = _payload_chunks(package)
    reordered = prefix + b"".join([chunks[1], chunks[0], *chunks[2:]])
    assert len(reordered) == len(package)
    with pytest.raises(PayloadDigestError):
        open_bytes(tmp_path, reordered, recipients[0], trust_store)


def test_chunk_spliced_from_another_package_is_refused(
    tmp_path: Path,
    package: bytes,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    other = packager.build(CHUNKED_FILES, recipients=packager.recipients[:2]).path.read_bytes()
    prefix, chunks = _payload_chunks(package)
    _, foreign = _payload_chunks(other)
    spliced = prefix + b"".join([chunks[0], foreign[1], *chunks[2:]])
    with pytest.raises(PayloadDigestError):
        open_bytes(tmp_path, spliced, recipients[0], trust_store)
    other_prefix, _ = _payload_chunks(other)
    with pytest.raises(PayloadDigestError):
        open_bytes(tmp_path, other_prefix + b"".join(chunks), recipients[0], trust_store)


def _swap_recipient_blocks(header: dict[str, Any]) -> None:
    first, second = header["recipients"][0], header["recipients"][1]
    for field in ("kem_ciphertext", "wrapped_key"):
        first[field], second[field] = second[field], first[field]


def test_swapped_recipient_blocks_break_the_signature(
    tmp_path: Path,
    package: bytes,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    swapped = resign(package, _swap_recipient_blocks, producer)
    layout = layout_of(package)
    assert layout_of(swapped).signature_start == layout.signature_start
    # The swapped header keeps the original (now mismatching) signature and payload.
    unsigned_swap = swapped[: layout.signature_start] + package[layout.signature_start :]
    assert unsigned_swap != package
    assert len(unsigned_swap) == len(package)
    with pytest.raises(PackageSignatureError, match="ML-DSA-65 and Ed25519"):
        open_bytes(tmp_path, unsigned_swap, recipients[0], trust_store)


def test_swapped_recipient_blocks_do_not_unwrap_even_if_signed(
    tmp_path: Path,
    package: bytes,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    swapped = resign(package, _swap_recipient_blocks, producer)
    for recipient in recipients[:2]:
        with pytest.raises(KeyUnwrapError):
            open_bytes(tmp_path, swapped, recipient, trust_store)


def test_recipient_block_copied_from_another_package_does_not_unwrap(
    tmp_path: Path,
    package: bytes,
    packager: Packager,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    other = packager.build({"x": b"other"}, recipients=packager.recipients[:2]).path.read_bytes()
    foreign_blocks = header_object(other)["recipients"]

    def copy_blocks(header: dict[str, Any]) -> None:
        header["recipients"] = foreign_blocks

    with pytest.raises(KeyUnwrapError):
        open_bytes(tmp_path, resign(package, copy_blocks, producer), recipients[0], trust_store)


def test_unknown_signer_is_refused(
    packager: Packager, stranger: CompositeSigningKey, trust_store: TrustStore
) -> None:
    result = packager.build({"f": b"1"}, signer=stranger)
    with pytest.raises(UnknownSignerError, match="not in the trust store"):
        verify_package(result.path, trust_store)
    assert verify_package(result.path, TrustStore([stranger.public_key()])).header == result.header


def test_self_consistent_package_from_a_stranger_claiming_our_key_id(
    tmp_path: Path,
    package: bytes,
    stranger: CompositeSigningKey,
    producer: CompositeSigningKey,
    trust_store: TrustStore,
) -> None:
    forged = resign(package, lambda _header: None, stranger)
    producer_id = bytes.fromhex(producer.public_key().fingerprint())
    claimed = forged[:12] + producer_id + forged[44:]
    with pytest.raises(PackageSignatureError):
        verify_package(write(tmp_path, claimed), trust_store)


def _component_swap(package: bytes, donor: bytes, keep_mldsa: bool) -> bytes:
    start = layout_of(package).signature_start
    donor_start = layout_of(donor).signature_start
    split = MLDSA65_SIGNATURE_SIZE
    if keep_mldsa:
        ed25519_half = donor[donor_start + split : donor_start + split + 64]
        return package[: start + split] + ed25519_half + package[start + split + 64 :]
    mldsa_half = donor[donor_start : donor_start + split]
    return package[:start] + mldsa_half + package[start + split :]


def test_mldsa_component_alone_is_refused(
    tmp_path: Path, package: bytes, packager: Packager, trust_store: TrustStore
) -> None:
    donor = packager.build({"f": b"donor"}).path.read_bytes()
    start = layout_of(package).signature_start + MLDSA65_SIGNATURE_SIZE
    zeroed = package[:start] + bytes(64) + package[start + 64 :]
    for altered in (zeroed, _component_swap(package, donor, keep_mldsa=True)):
        with pytest.raises(PackageSignatureError, match="Ed25519 component invalid"):
            verify_package(write(tmp_path, altered), trust_store)


def test_ed25519_component_alone_is_refused(
    tmp_path: Path, package: bytes, packager: Packager, trust_store: TrustStore
) -> None:
    donor = packager.build({"f": b"donor"}).path.read_bytes()
    start = layout_of(package).signature_start
    zeroed = (
        package[:start] + bytes(MLDSA65_SIGNATURE_SIZE) + package[start + MLDSA65_SIGNATURE_SIZE :]
    )
    for altered in (zeroed, _component_swap(package, donor, keep_mldsa=False)):
        with pytest.raises(PackageSignatureError, match="ML-DSA-65 component invalid"):
            verify_package(write(tmp_path, altered), trust_store)


def test_expired_package_is_refused(packager: Packager, trust_store: TrustStore, now: int) -> None:
    result = packager.build({"f": b"1"}, created_at=now - 7200, expires_at=now - 1)
    with pytest.raises(PackageExpiredError):
        verify_package(result.path, trust_store)
    verify_package(result.path, trust_store, VerificationPolicy(now=now - 3600))


def test_package_from_the_future_is_refused(
    packager: Packager, trust_store: TrustStore, now: int
) -> None:
    result = packager.build({"f": b"1"}, created_at=now + 3600, expires_at=now + 7200)
    with pytest.raises(PackageNotYetValidError):
        verify_package(result.path, trust_store)


def test_version_below_high_water_mark_is_refused(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    result = packager.build({"f": b"1"}, version=7, channel="stable")
    with pytest.raises(RollbackError):
        verify_package(result.path, trust_store, VerificationPolicy(high_water_marks={"stable": 8}))
    with pytest.raises(RollbackError):
        open_package(
            result.path,
            tmp_path / "rollback-out",
            recipient_key=recipients[0],
            trust_store=trust_store,
            policy=VerificationPolicy(high_water_marks={"stable": 8}),
        )
    assert not (tmp_path / "rollback-out").exists()
    for marks in ({"stable": 6}, {"canary": 100}):
        verify_package(result.path, trust_store, VerificationPolicy(high_water_marks=marks))


def test_unexpected_channel_is_refused(packager: Packager, trust_store: TrustStore) -> None:
    result = packager.build({"f": b"1"}, channel="canary")
    with pytest.raises(ChannelMismatchError):
        verify_package(result.path, trust_store, VerificationPolicy(expected_channel="stable"))


def test_oversized_header_length_is_refused_before_reading(
    tmp_path: Path, package: bytes, trust_store: TrustStore
) -> None:
    huge = package[:44] + (2**31).to_bytes(4, "big") + package[48:]
    with pytest.raises(HeaderTooLargeError):
        verify_package(write(tmp_path, huge), trust_store)
    with pytest.raises(HeaderTooLargeError):
        verify_package(write(tmp_path, package), trust_store, limits=Limits(max_header_bytes=1024))


def test_package_modified_after_verification_is_still_refused(
    tmp_path: Path,
    package: bytes,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The byte is flipped after the header verified and before the payload is read: the
    one-pass opener hashes each segment in memory and refuses it before decrypting it
    (tests/tgsp/test_single_pass_open.py: without that check, AES-GCM refuses the chunk)."""
    from tensorguard.tgsp._verifier import verify_header as real_verify

    path = write(tmp_path, package)

    def verify_then_tamper(*args: Any, **kwargs: Any) -> Any:
        verified = real_verify(*args, **kwargs)
        with path.open("r+b") as handle:  # an attacker rewrites one payload byte
            handle.seek(verified.payload_offset + 5)
            original = handle.read(1)
            handle.seek(verified.payload_offset + 5)
            handle.write(bytes([original[0] ^ 0x40]))
        return verified

    monkeypatch.setattr("tensorguard.tgsp._opener.verify_header", verify_then_tamper)
    destination = tmp_path / "toctou-out"
    with pytest.raises(PayloadDigestError, match="payload segment 0 of"):
        open_package(path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert not destination.exists()
