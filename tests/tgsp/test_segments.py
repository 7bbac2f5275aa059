"""TGSP v3 payload segments: each segment's signed SHA-256 is checked, on any thread count.

The header lists one SHA-256 per run of ``segment_chunks`` sealed chunks; verification
hashes segments on worker threads. These tests alter one segment, reorder segments,
sign headers whose segment list or geometry is wrong, and push the segment limits.
"""

from __future__ import annotations

import hashlib
import os
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import TAG_SIZE, CompositeSigningKey, XWingPrivateKey
from tensorguard.tgsp import (
    BuildError,
    HeaderSchemaError,
    HeaderTooLargeError,
    PayloadDigestError,
    TrustStore,
    UnsupportedFormatVersionError,
    open_package,
    verify_package,
)
from tensorguard.tgsp._builder import choose_segment_chunks
from tensorguard.tgsp._format import (
    DEFAULT_SEGMENT_BYTES,
    FORMAT_VERSION,
    MAX_SEGMENT_CHUNKS,
    Limits,
)
from tensorguard.tgsp._header import segment_count
from tensorguard.tgsp._payload import VERIFY_BLOCK_SIZE, check_payload_digest
from tensorguard.tgsp._reader import inspect_package
from tests.tgsp.conftest import SMALL_CHUNK, Packager, header_object, layout_of, resign

SEGMENT = 2
FILES = {"a.bin": os.urandom(7 * SMALL_CHUNK + 5), "b/c.bin": os.urandom(SMALL_CHUNK - 1)}
SEALED_SEGMENT = SEGMENT * (SMALL_CHUNK + TAG_SIZE)


def _write(tmp_path: Path, data: bytes, name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_header_lists_one_digest_per_segment_of_the_sealed_payload(packager: Packager) -> None:
    result = packager.build(FILES, segment_chunks=SEGMENT)
    package = result.path.read_bytes()
    payload = result.header.payload
    sealed = package[layout_of(package).payload_start :]
    assert payload.chunk_count == 9
    assert payload.segment_chunks == SEGMENT
    assert payload.segment_sha256 == tuple(
        hashlib.sha256(sealed[start : start + SEALED_SEGMENT]).hexdigest()
        for start in range(0, len(sealed), SEALED_SEGMENT)
    )
    assert len(payload.segment_sha256) == 5  # the last segment holds one (short) chunk


@pytest.mark.parametrize("threads", [1, 3])
def test_a_flipped_byte_in_each_segment_names_that_segment(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    threads: int,
) -> None:
    package = packager.build(FILES, segment_chunks=SEGMENT).path.read_bytes()
    start = layout_of(package).payload_start
    segments = -(-(len(package) - start) // SEALED_SEGMENT)
    for index in range(segments):
        altered = bytearray(package)
        altered[min(start + index * SEALED_SEGMENT + 700, len(package) - 1)] ^= 0x04
        path = _write(tmp_path, bytes(altered), f"flip-{index}.tgsp")
        with pytest.raises(PayloadDigestError, match=rf"payload segment {index} of {segments}:"):
            verify_package(path, trust_store, threads=threads)
        destination = tmp_path / f"out-{index}"
        with pytest.raises(PayloadDigestError):
            open_package(
                path,
                destination,
                recipient_key=recipients[0],
                trust_store=trust_store,
                threads=threads,
            )
        assert not destination.exists()


def test_swapped_whole_segments_are_refused(
    tmp_path: Path, packager: Packager, trust_store: TrustStore
) -> None:
    package = packager.build(FILES, segment_chunks=SEGMENT).path.read_bytes()
    start = layout_of(package).payload_start
    first, second = start + SEALED_SEGMENT, start + 3 * SEALED_SEGMENT
    altered = bytearray(package)
    altered[first : first + SEALED_SEGMENT], altered[second : second + SEALED_SEGMENT] = (
        package[second : second + SEALED_SEGMENT],
        package[first : first + SEALED_SEGMENT],
    )
    with pytest.raises(PayloadDigestError, match="payload segment 1 of 5"):
        verify_package(_write(tmp_path, bytes(altered), "swapped.tgsp"), trust_store)


def _signed(package: bytes, producer: CompositeSigningKey, change: Any) -> bytes:
    def mutate(header: dict[str, Any]) -> None:
        change(header["payload"])

    return resign(package, mutate, producer)


def test_signed_headers_with_a_wrong_segment_list_are_refused(
    tmp_path: Path, packager: Packager, producer: CompositeSigningKey, trust_store: TrustStore
) -> None:
    """A (faulty) producer's valid signature does not make a wrong segment list pass."""
    package = packager.build(FILES, segment_chunks=SEGMENT).path.read_bytes()
    digests = header_object(package)["payload"]["segment_sha256"]
    cases: list[tuple[str, Any, type[Exception], str]] = [
        ("reordered", lambda p: p.update(segment_sha256=[digests[1], digests[0], *digests[2:]]),
         PayloadDigestError, "payload segment 0 of 5"),
        ("one missing", lambda p: p.update(segment_sha256=digests[:-1]),
         HeaderSchemaError, "lists 4 digests; the geometry needs 5"),
        ("one extra", lambda p: p.update(segment_sha256=[*digests, digests[0]]),
         HeaderSchemaError, "lists 6 digests"),
        ("other geometry", lambda p: p.update(segment_chunks=3, segment_sha256=digests[:3]),
         PayloadDigestError, "payload segment 0 of 3"),
        ("zero chunks", lambda p: p.update(segment_chunks=0), HeaderSchemaError,
         "payload.segment_chunks"),
        ("too many chunks", lambda p: p.update(segment_chunks=MAX_SEGMENT_CHUNKS + 1),
         HeaderSchemaError, "payload.segment_chunks"),
        ("upper-case hex", lambda p: p.update(segment_sha256=[digests[0].upper(), *digests[1:]]),
         HeaderSchemaError, r"payload.segment_sha256\[0\]"),
        ("not a list", lambda p: p.update(segment_sha256=digests[0]), HeaderSchemaError,
         "must be an array"),
        ("v2 digest field", lambda p: p.update(sha256=digests[0]), HeaderSchemaError,
         "unknown"),
    ]  # fmt: skip
    for name, change, error, message in cases:
        path = _write(tmp_path, _signed(package, producer, change), f"{name}.tgsp")
        with pytest.raises(error, match=message):
            verify_package(path, trust_store)


def test_the_segment_limit_is_checked_before_hashing(
    packager: Packager, trust_store: TrustStore
) -> None:
    result = packager.build(FILES, segment_chunks=SEGMENT)
    with pytest.raises(HeaderTooLargeError, match="5 payload segments exceed the limit of 4"):
        verify_package(result.path, trust_store, limits=Limits(max_segments=4))
    with pytest.raises(HeaderTooLargeError, match="5 payload segments exceed the limit of 4"):
        result.header.encode(Limits(max_segments=4))  # the builder's own check
    verify_package(result.path, trust_store, limits=Limits(max_segments=5))


def test_the_builder_keeps_segments_within_the_limits(
    packager: Packager, trust_store: TrustStore
) -> None:
    assert choose_segment_chunks(10, SMALL_CHUNK, Limits()) == DEFAULT_SEGMENT_BYTES // 1024
    assert choose_segment_chunks(10, 32 * 1024 * 1024, Limits()) == 1
    # Without a request, segments grow so their count stays within the limit.
    assert choose_segment_chunks(100, 1 << 20, Limits(max_segments=3)) == 34
    assert segment_count(100, 34) == 3
    with pytest.raises(HeaderTooLargeError, match="limit is 3"):
        choose_segment_chunks(100, 1 << 20, Limits(max_segments=3), requested=2)
    for bad in (0, MAX_SEGMENT_CHUNKS + 1):
        with pytest.raises(BuildError, match="segment_chunks must be"):
            packager.build(FILES, segment_chunks=bad)
    default = packager.build(FILES, segment_chunks=None)
    assert default.header.payload.segment_chunks == DEFAULT_SEGMENT_BYTES // SMALL_CHUNK
    assert len(default.header.payload.segment_sha256) == 1
    verify_package(default.path, trust_store)


def test_an_older_format_version_is_refused_with_the_fix(
    tmp_path: Path, packager: Packager, trust_store: TrustStore
) -> None:
    package = bytearray(packager.build(FILES).path.read_bytes())
    assert int.from_bytes(package[8:10], "big") == FORMAT_VERSION == 3
    package[8:10] = (2).to_bytes(2, "big")
    with pytest.raises(UnsupportedFormatVersionError, match=r"version 2 is not supported.*rebuild"):
        verify_package(_write(tmp_path, bytes(package), "v2.tgsp"), trust_store)


def test_verification_memory_is_a_block_per_thread_whatever_the_payload(
    packager: Packager,
) -> None:
    """Hashing 4 MiB in 64 segments on 4 threads holds at most one read block per thread."""
    result = packager.build({"big.bin": os.urandom(4 * 1024 * 1024)}, segment_chunks=64)
    inspected = inspect_package(result.path)
    offset = inspected.package_size - inspected.header.payload.length
    assert len(inspected.header.payload.segment_sha256) == 64
    with result.path.open("rb", buffering=0) as handle:
        tracemalloc.start()
        try:
            check_payload_digest(handle, offset, inspected.header.payload, threads=4)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 4 * VERIFY_BLOCK_SIZE + 256 * 1024, peak
