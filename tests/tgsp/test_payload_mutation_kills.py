"""The payload layer on its own: key derivation, segment hashing, chunk decryption (#18 item 6).

Each test builds a real package and calls ``tensorguard/tgsp/_payload.py`` directly on
its bytes (altered where the test says so), bypassing the verifier's earlier steps so
that every refusal the payload layer makes itself is pinned: its type, its words, and
which segment or chunk it names, with one and several threads.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tensorguard.crypto import TAG_SIZE, XWingPrivateKey, unwrap_key
from tensorguard.tgsp import (
    ChunkAuthenticationError,
    PackageTruncatedError,
    PayloadDigestError,
    TrustStore,
    verify_package,
)
from tensorguard.tgsp._payload import (
    VERIFY_BLOCK_SIZE,
    check_payload_digest,
    decrypt_payload,
    derive_payload_key,
)
from tests.tgsp.conftest import SMALL_CHUNK, Packager

SUITE = "TGSP3-COMPSIG-MLDSA65-Ed25519-SHA512-XWING-HKDF-SHA256-AES256GCM-SHA256"
FILES = {
    "a.bin": os.urandom(5 * SMALL_CHUNK + 17),
    "b/empty": b"",
    "b/c.bin": os.urandom(2 * SMALL_CHUNK),
    "d.txt": b"tail",
}
PLAINTEXT = b"".join(FILES[name] for name in sorted(FILES))
"""The payload's plaintext: every file, in manifest (sorted path) order."""


class Opened:
    """A real package's bytes, its verified header and its data key."""

    def __init__(self, path: Path, trust_store: TrustStore, recipient: XWingPrivateKey) -> None:
        self.path = path
        self.data = path.read_bytes()
        verified = verify_package(path, trust_store)
        self.header = verified.header
        self.offset = verified.payload_offset
        self.package_id = bytes.fromhex(self.header.package_id)
        block = self.header.recipients[0]
        self.data_key = unwrap_key(block, recipient, binding=self.package_id)
        self.key = derive_payload_key(self.data_key, self.package_id)

    def sealed_chunk_start(self, index: int) -> int:
        return self.offset + index * (self.header.payload.chunk_size + TAG_SIZE)

    def segment_start(self, index: int) -> int:
        return self.offset + self.header.payload.segment_span(index)[0]

    def variant(self, tmp_path: Path, data: bytes, name: str) -> Path:
        path = tmp_path / name
        path.write_bytes(data)
        return path

    def flipped(self, tmp_path: Path, *positions: int) -> Path:
        altered = bytearray(self.data)
        for position in positions:
            altered[position] ^= 0x40
        return self.variant(tmp_path, bytes(altered), f"flip-{'-'.join(map(str, positions))}")

    def decrypt(self, path: Path, threads: int) -> bytes:
        with path.open("rb", buffering=0) as handle:
            handle.seek(self.offset)
            return b"".join(
                bytes(view)
                for view in decrypt_payload(
                    handle, self.header.payload, self.key, self.package_id, threads
                )
            )

    def check(self, path: Path, threads: int) -> None:
        with path.open("rb", buffering=0) as handle:
            check_payload_digest(handle, self.offset, self.header.payload, threads)


@pytest.fixture
def opened(
    packager: Packager, trust_store: TrustStore, recipients: list[XWingPrivateKey]
) -> Opened:
    result = packager.build(FILES, segment_chunks=2)
    return Opened(result.path, trust_store, recipients[0])


def test_the_payload_key_is_hkdf_over_the_package_id_and_suite() -> None:
    data_key = bytes(range(32))
    package_id = bytes(range(100, 116))
    label = b"TGSP-v3 payload key"
    info = len(label).to_bytes(4, "big") + label + len(SUITE).to_bytes(4, "big") + SUITE.encode()
    expected = HKDF(algorithm=hashes.SHA256(), length=32, salt=package_id, info=info).derive(
        data_key
    )
    assert derive_payload_key(data_key, package_id) == expected
    assert derive_payload_key(data_key, bytes(16)) != expected


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_decryption_yields_every_file_in_manifest_order(opened: Opened, threads: int) -> None:
    payload = opened.header.payload
    assert payload.chunk_count == 8  # seven full chunks and a short last one
    assert opened.decrypt(opened.path, threads) == PLAINTEXT


def test_each_yielded_view_is_one_chunk_in_order(opened: Opened) -> None:
    with opened.path.open("rb", buffering=0) as handle:
        handle.seek(opened.offset)
        sizes = [
            len(view)
            for view in decrypt_payload(
                handle, opened.header.payload, opened.key, opened.package_id, threads=1
            )
        ]
    assert sizes == [SMALL_CHUNK] * 7 + [len(PLAINTEXT) - 7 * SMALL_CHUNK]


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_the_first_altered_chunk_is_the_one_reported(
    tmp_path: Path, opened: Opened, threads: int
) -> None:
    path = opened.flipped(tmp_path, opened.sealed_chunk_start(3) + 5, opened.sealed_chunk_start(6))
    with pytest.raises(ChunkAuthenticationError) as caught:
        opened.decrypt(path, threads)
    assert str(caught.value).startswith("payload chunk 3: ")
    assert type(caught.value.__cause__).__name__ == "AEADDecryptionError"
    assert str(caught.value) == f"payload chunk 3: {caught.value.__cause__}"


def test_the_last_chunk_is_authenticated_too(tmp_path: Path, opened: Opened) -> None:
    path = opened.flipped(tmp_path, len(opened.data) - 1)
    with pytest.raises(ChunkAuthenticationError, match=r"^payload chunk 7: "):
        opened.decrypt(path, 1)


def test_the_wrong_key_fails_at_the_first_chunk(opened: Opened) -> None:
    with opened.path.open("rb", buffering=0) as handle:
        handle.seek(opened.offset)
        chunks = decrypt_payload(
            handle, opened.header.payload, bytes(32), opened.package_id, threads=1
        )
        with pytest.raises(ChunkAuthenticationError, match=r"^payload chunk 0: "):
            next(chunks)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_payload_cut_short_is_truncated_when_decrypting(
    tmp_path: Path, opened: Opened, threads: int
) -> None:
    for cut in (opened.sealed_chunk_start(4) + 10, len(opened.data) - 1, opened.offset):
        path = opened.variant(tmp_path, opened.data[:cut], f"cut-{cut}")
        with pytest.raises(PackageTruncatedError) as caught:
            opened.decrypt(path, threads)
        assert type(caught.value) is PackageTruncatedError
        assert str(caught.value) == "package ended inside its payload"


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_the_untouched_payload_matches_its_segment_digests(opened: Opened, threads: int) -> None:
    assert len(opened.header.payload.segment_sha256) == 4
    opened.check(opened.path, threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("segment", [0, 1, 2, 3])
def test_an_altered_segment_is_named_word_for_word(
    tmp_path: Path, opened: Opened, threads: int, segment: int
) -> None:
    path = opened.flipped(tmp_path, opened.segment_start(segment) + 1)
    with pytest.raises(PayloadDigestError) as caught:
        opened.check(path, threads)
    assert str(caught.value) == (
        f"payload segment {segment} of 4: SHA-256 does not match the signed header; "
        "the encrypted payload was altered, reordered or spliced"
    )


@pytest.mark.parametrize("threads", [1, 2])
def test_the_first_of_several_altered_segments_is_reported(
    tmp_path: Path, opened: Opened, threads: int
) -> None:
    path = opened.flipped(tmp_path, opened.segment_start(1) + 3, opened.segment_start(3) + 3)
    with pytest.raises(PayloadDigestError, match=r"^payload segment 1 of 4: "):
        opened.check(path, threads)


def test_many_segments_on_one_thread_are_all_checked(
    tmp_path: Path, packager: Packager, trust_store: TrustStore, recipients: list[XWingPrivateKey]
) -> None:
    """More segments than the queue holds: the last ones are still compared."""
    many = Opened(
        packager.build({"m.bin": os.urandom(12 * SMALL_CHUNK)}, segment_chunks=1).path,
        trust_store,
        recipients[0],
    )
    segments = len(many.header.payload.segment_sha256)
    assert segments == 12
    for segment in (0, 2, 3, 10, 11):
        path = many.flipped(tmp_path, many.segment_start(segment) + 7)
        for threads in (1, 2):
            with pytest.raises(PayloadDigestError, match=rf"^payload segment {segment} of 12: "):
                many.check(path, threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_payload_cut_short_is_truncated_when_hashing(
    tmp_path: Path, opened: Opened, threads: int
) -> None:
    path = opened.variant(tmp_path, opened.data[:-5], "short.tgsp")
    with pytest.raises(PackageTruncatedError) as caught:
        opened.check(path, threads)
    assert type(caught.value) is PackageTruncatedError
    assert str(caught.value) == "package ended inside its payload"


def test_segments_larger_than_a_read_block_hash_exactly_their_bytes(
    tmp_path: Path, packager: Packager, trust_store: TrustStore, recipients: list[XWingPrivateKey]
) -> None:
    """Segments of 2 MiB + 128 bytes: each is hashed in three reads of at most a block."""
    chunk = 256 * 1024
    content = os.urandom(5 * 1024 * 1024)
    big = Opened(
        packager.build({"big.bin": content}, chunk_size=chunk, segment_chunks=8).path,
        trust_store,
        recipients[0],
    )
    payload = big.header.payload
    assert payload.segment_span(0)[1] == 8 * (chunk + TAG_SIZE) > 2 * VERIFY_BLOCK_SIZE
    assert len(payload.segment_sha256) == 3
    sealed = big.data[big.offset :]
    assert (
        payload.segment_sha256[1]
        == hashlib.sha256(
            sealed[payload.segment_span(1)[0] :][: payload.segment_span(1)[1]]
        ).hexdigest()
    )
    for threads in (1, 3):
        big.check(big.path, threads)
    # a byte in the third block of segment 0, and the last byte of the payload
    for position, segment in ((big.offset + 2 * VERIFY_BLOCK_SIZE + 9, 0), (len(big.data) - 1, 2)):
        path = big.flipped(tmp_path, position)
        with pytest.raises(PayloadDigestError, match=rf"^payload segment {segment} of 3: "):
            big.check(path, 2)
    assert big.decrypt(big.path, 2) == content


def test_short_reads_from_the_source_are_filled_up(opened: Opened) -> None:
    """A source that hands out a chunk in pieces (a pipe) still fills whole chunks.

    The writer pauses after the first 100 bytes, so the first read returns only those
    (were the pause not long enough, the read would be whole and the test still pass).
    """
    reader, writer = os.pipe()
    sealed = opened.data[opened.offset :]

    def feed() -> None:
        with os.fdopen(writer, "wb", buffering=0) as sink:
            sink.write(sealed[:100])
            time.sleep(0.3)
            sink.write(sealed[100:])

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        with os.fdopen(reader, "rb", buffering=0) as source:
            plaintext = b"".join(
                bytes(view)
                for view in decrypt_payload(
                    source, opened.header.payload, opened.key, opened.package_id, threads=1
                )
            )
    finally:
        feeder.join()
    assert plaintext == PLAINTEXT
