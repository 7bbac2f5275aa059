"""Opening a package: the refusals an operator reads, the two-pass path, nothing left (#18 item 6).

``tensorguard/tgsp/_opener.py`` verifies the header, finds this key's recipient block,
checks the destination and extracts into a staging directory that becomes the
destination only when everything matched. These tests pin what it promises: each refusal
in full (a key that is not a recipient, a block that does not unwrap, an existing or
parentless destination, an unreadable package, a destination that appears while the
package is opened, a write that fails), the caller's limits applied, the returned
record, and the two-pass path that payloads with segments over 17 MiB take (real
geometry, not a patched switch): the whole payload checked before any plaintext, each
file's SHA-256 compared, bytes beyond the manifest refused wherever they sit, and the
flushes of large files on worker threads. Real packages and files in temporary
directories; the one stand-in is a chunk stream handed straight to ``_extract``, the only
way to give the two-pass writer a stream that the builder never makes.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.tgsp import (
    ChunkAuthenticationError,
    ExtractionError,
    FileDigestError,
    HeaderTooLargeError,
    KeyUnwrapError,
    NotARecipientError,
    PackageUnreadableError,
    PayloadDigestError,
    TrustStore,
    open_package,
)
from tensorguard.tgsp import _opener as opener
from tensorguard.tgsp._format import Limits
from tensorguard.tgsp._header import FileEntry
from tensorguard.tgsp._opener import OpenedPackage
from tensorguard.tgsp._unsealing import SINGLE_PASS_SEGMENT_BYTES, fits_single_pass, open_segments
from tests.tgsp.conftest import Packager, header_object, layout_of, resign

TWO_PASS_SEGMENT_CHUNKS = 17141
"""With 1 KiB chunks: 17141 x 1040 sealed bytes per segment, just over the one-pass limit."""
BIG = os.urandom((1 << 20) + 777)  # over WRITEBACK_MIN_BYTES: a flush starts on a lane
TREE = {
    "a/empty-first": b"",
    "a/big.bin": BIG,
    "a/deep/small.txt": b"small",
    "b/empty": b"",
    "c.bin": os.urandom(5000),
    "z-empty-last": b"",
}


def _no_leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".tmp-"))


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _open(
    path: Path, destination: Path, key: XWingPrivateKey, trust: TrustStore, **options: Any
) -> OpenedPackage:
    return open_package(path, destination, recipient_key=key, trust_store=trust, **options)


# --- who may open it ---------------------------------------------------------------------


def test_a_key_that_is_not_a_recipient_is_told_whom_to_ask(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    result = packager.build({"f": b"1"}, recipients=recipients[:2])
    outsider = recipients[3]
    fingerprint = outsider.public_key().fingerprint()
    with pytest.raises(NotARecipientError) as caught:
        _open(result.path, tmp_path / "out", outsider, trust_store)
    assert str(caught.value) == (
        f"this key ({fingerprint[:16]}) is not among the package's 2 recipients; "
        "ask the producer to include it"
    )
    assert not (tmp_path / "out").exists()


def test_a_key_block_from_another_package_does_not_unwrap_and_says_why(
    tmp_path: Path,
    packager: Packager,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    package = packager.build({"f": b"1"}).path.read_bytes()
    foreign = header_object(packager.build({"g": b"2"}).path.read_bytes())["recipients"]

    def copy_blocks(header: dict[str, Any]) -> None:
        header["recipients"] = foreign

    forged = tmp_path / "forged.tgsp"
    forged.write_bytes(resign(package, copy_blocks, producer))
    with pytest.raises(KeyUnwrapError) as caught:
        _open(forged, tmp_path / "out", recipients[0], trust_store)
    assert str(caught.value) == (
        "cannot recover the data key: key block does not unwrap: it was altered, swapped "
        "with another recipient's block, or copied from another package"
    )
    assert not (tmp_path / "out").exists()


# --- where it goes -----------------------------------------------------------------------


@pytest.mark.parametrize("existing", ["directory", "file", "dangling-symlink"])
def test_an_existing_destination_is_refused_and_left_alone(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    existing: str,
) -> None:
    result = packager.build({"f": b"1"})
    destination = tmp_path / "out"
    if existing == "directory":
        destination.mkdir()
        (destination / "mine").write_bytes(b"keep")
    elif existing == "file":
        destination.write_bytes(b"keep")
    else:
        destination.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ExtractionError) as caught:
        _open(result.path, destination, recipients[0], trust_store)
    assert str(caught.value) == f"{destination} already exists; open into a new directory"
    if existing == "directory":
        assert _tree(destination) == {"mine": b"keep"}
    elif existing == "file":
        assert destination.read_bytes() == b"keep"
    else:
        assert destination.is_symlink()
        assert not (tmp_path / "nowhere").exists()
    assert _no_leftovers(tmp_path) == []


@pytest.mark.parametrize("parent_kind", ["missing", "file"])
def test_a_destination_without_a_parent_directory_is_refused(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    parent_kind: str,
) -> None:
    result = packager.build({"f": b"1"})
    parent = tmp_path / "parent"
    if parent_kind == "file":
        parent.write_bytes(b"not a directory")
    with pytest.raises(ExtractionError) as caught:
        _open(result.path, parent / "out", recipients[0], trust_store)
    assert str(caught.value) == f"parent directory {parent} does not exist"
    assert parent.exists() == (parent_kind == "file")


def test_a_destination_that_appears_while_opening_is_not_replaced(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process creates the destination after the opener checked it: the new tree
    is not swapped in over it (nor is the other one's content removed)."""
    result = packager.build({"f": b"1", "g/h": b"2"})
    destination = tmp_path / "out"

    def someone_else_creates_it(*args: Any) -> None:
        destination.mkdir()
        (destination / "theirs").write_bytes(b"theirs")
        open_segments(*args)

    monkeypatch.setattr(opener, "open_segments", someone_else_creates_it)
    with pytest.raises(ExtractionError) as caught:
        _open(result.path, destination, recipients[0], trust_store)
    assert str(caught.value) == f"{destination} already exists; open into a new directory"
    assert _tree(destination) == {"theirs": b"theirs"}
    assert _no_leftovers(tmp_path) == []


@pytest.fixture
def file_size_limit() -> Iterator[int]:
    """Writes past 64 KiB fail with EFBIG in this process (SIGXFSZ ignored) until the end."""
    limit = 64 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    yield limit
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    signal.signal(signal.SIGXFSZ, previous)


@pytest.mark.parametrize("segment_chunks", [2, TWO_PASS_SEGMENT_CHUNKS], ids=["one-pass", "two"])
def test_a_failed_write_says_what_to_do_and_leaves_nothing(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    file_size_limit: int,
    segment_chunks: int,
) -> None:
    result = packager.build({"small": b"s", "big.bin": BIG}, segment_chunks=segment_chunks)
    destination = tmp_path / "out"
    _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, hard))
    with pytest.raises(ExtractionError) as caught:
        _open(result.path, destination, recipients[0], trust_store, threads=2)
    assert str(caught.value) == (
        f"cannot extract {result.path} into {destination}: File too large; free space on "
        "that file system (or raise the quota / file-size limit) and open again; nothing "
        "was extracted"
    )
    assert not destination.exists()
    assert _no_leftovers(tmp_path) == []


@pytest.mark.parametrize("what", ["missing", "directory"])
def test_an_unreadable_package_is_named_with_the_reason(
    tmp_path: Path, recipients: list[XWingPrivateKey], trust_store: TrustStore, what: str
) -> None:
    path = tmp_path / "package.tgsp"
    reason = "No such file or directory"
    if what == "directory":
        path.mkdir()
        reason = "Is a directory"
    with pytest.raises(PackageUnreadableError) as caught:
        _open(path, tmp_path / "out", recipients[0], trust_store)
    assert str(caught.value) == f"cannot read {path}: {reason}"


def test_the_callers_limits_apply(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    result = packager.build({"f": b"1", "g": b"2"})
    with pytest.raises(HeaderTooLargeError) as caught:
        _open(result.path, tmp_path / "out", recipients[0], trust_store, limits=Limits(max_files=1))
    assert str(caught.value) == "2 files exceed the limit of 1"
    assert not (tmp_path / "out").exists()
    opened = _open(result.path, tmp_path / "out", recipients[0], trust_store, limits=Limits())
    assert _tree(opened.destination) == {"f": b"1", "g": b"2"}


def test_the_result_names_the_tree_the_header_and_the_signer(
    tmp_path: Path,
    packager: Packager,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    result = packager.build({"f": b"1"})
    opened = _open(result.path, tmp_path / "out", recipients[0], trust_store)
    assert opened.destination == tmp_path / "out"
    assert opened.header == result.header
    assert opened.signer_key_id == producer.public_key().fingerprint()


# --- the two-pass path -------------------------------------------------------------------


def _two_pass_package(packager: Packager, files: dict[str, bytes]) -> Path:
    result = packager.build(files, segment_chunks=TWO_PASS_SEGMENT_CHUNKS)
    payload = result.header.payload
    assert payload.segment_bytes == SINGLE_PASS_SEGMENT_BYTES + 848
    assert not fits_single_pass(payload)
    return result.path


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("readable_by_all", [False, True])
def test_a_payload_with_large_segments_opens_in_two_passes(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    threads: int,
    readable_by_all: bool,
) -> None:
    path = _two_pass_package(packager, TREE)
    previous = os.umask(0)
    try:
        opened = _open(
            path,
            tmp_path / "out",
            recipients[0],
            trust_store,
            threads=threads,
            readable_by_all=readable_by_all,
        )
    finally:
        os.umask(previous)
    assert _tree(opened.destination) == TREE
    file_mode, directory_mode = (0o644, 0o755) if readable_by_all else (0o600, 0o700)
    for entry in [opened.destination, *opened.destination.rglob("*")]:
        expected = directory_mode if entry.is_dir() else file_mode
        assert stat.S_IMODE(entry.stat().st_mode) == expected, entry


@pytest.mark.parametrize("files", [{}, {"empty": b"", "also/empty": b""}], ids=["none", "empty"])
def test_two_passes_over_a_package_without_bytes(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    files: dict[str, bytes],
) -> None:
    path = _two_pass_package(packager, files)
    opened = _open(path, tmp_path / "out", recipients[0], trust_store, threads=1)
    assert _tree(opened.destination) == files


def test_two_passes_write_a_file_over_64_mib_on_worker_threads(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    """Every 64 MiB written (WRITEBACK_BYTES) a flush of the file being written starts on
    a lane: a two-pass payload (over 1 TiB in practice) always has such files."""
    big = os.urandom(64 * 1024 * 1024 + 3)
    result = packager.build({"huge.bin": big}, chunk_size=1024 * 1024, segment_chunks=17)
    assert not fits_single_pass(result.header.payload)  # 17 x (1 MiB + 16) sealed bytes
    path = result.path
    opened = _open(path, tmp_path / "out", recipients[0], trust_store, threads=2)
    assert (opened.destination / "huge.bin").read_bytes() == big


def test_two_passes_check_the_whole_payload_before_decrypting(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    """A flipped byte in the last chunk: the payload digest refuses it before any chunk
    is decrypted (AES-GCM would only have noticed at that chunk)."""
    path = _two_pass_package(packager, TREE)
    data = bytearray(path.read_bytes())
    data[layout_of(bytes(data)).size - 3] ^= 0x40
    path.write_bytes(bytes(data))
    with pytest.raises(PayloadDigestError) as caught:
        _open(path, tmp_path / "out", recipients[0], trust_store, threads=2)
    assert str(caught.value) == (
        "payload segment 0 of 1: SHA-256 does not match the signed header; the encrypted "
        "payload was altered, reordered or spliced"
    )
    assert not (tmp_path / "out").exists()
    assert _no_leftovers(tmp_path) == []


# --- _extract: the two-pass writer given streams the builder never makes -------------------


def _entries(files: dict[str, bytes]) -> tuple[FileEntry, ...]:
    return tuple(
        FileEntry(name, len(data), hashlib.sha256(data).hexdigest()) for name, data in files.items()
    )


def _pieces(data: bytes, size: int) -> list[bytes]:
    return [data[start : start + size] for start in range(0, len(data), size)]


STREAM_FILES = {"a": b"", "b/one": b"0123456789" * 7, "b/two": b"", "c": b"xyz" * 50, "d": b""}
STREAM = b"".join(STREAM_FILES.values())


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("piece", [1, 7, 70, 1000])
def test_the_two_pass_writer_splits_any_chunking_into_the_files(
    tmp_path: Path, threads: int, piece: int
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    opener._extract(
        iter(_pieces(STREAM, piece)), _entries(STREAM_FILES), root, (0o600, 0o700), threads
    )
    assert _tree(root) == STREAM_FILES
    assert stat.S_IMODE((root / "b").stat().st_mode) == 0o700


@pytest.mark.parametrize("threads", [1, 2])
def test_the_two_pass_writer_refuses_a_short_stream_naming_the_file(
    tmp_path: Path, threads: int
) -> None:
    with pytest.raises(FileDigestError) as caught:
        opener._extract(
            iter([STREAM[:40]]), _entries(STREAM_FILES), tmp_path, (0o600, 0o700), threads
        )
    assert str(caught.value) == "b/one: payload ended before the file did"


@pytest.mark.parametrize("threads", [1, 2])
def test_the_two_pass_writer_refuses_a_file_whose_digest_differs(
    tmp_path: Path, threads: int
) -> None:
    changed = STREAM[:100] + b"!" + STREAM[101:]
    with pytest.raises(FileDigestError) as caught:
        opener._extract(
            iter(_pieces(changed, 64)), _entries(STREAM_FILES), tmp_path, (0o600, 0o700), threads
        )
    assert str(caught.value) == (
        "c: SHA-256 of the decrypted file differs from the signed manifest"
    )


@pytest.mark.parametrize(
    "tail",
    [
        [STREAM + b"smuggled"],  # in the last chunk
        [STREAM + b"smuggled", b"smuggled"],  # in it and in one more of the same length
        [STREAM + b"smuggled", b""],  # in it, followed by an empty chunk
        [STREAM, b"", b"smuggled"],  # in a later chunk
    ],
    ids=["last-chunk", "and-an-equal-chunk", "and-an-empty-chunk", "later-chunk"],
)
def test_the_two_pass_writer_refuses_bytes_beyond_the_manifest(
    tmp_path: Path, tail: list[bytes]
) -> None:
    with pytest.raises(FileDigestError) as caught:
        opener._extract(iter(tail), _entries(STREAM_FILES), tmp_path, (0o600, 0o700), 1)
    assert str(caught.value) == "payload holds bytes beyond the files in the manifest"


def test_the_two_pass_writer_drains_the_stream_so_its_last_check_runs(tmp_path: Path) -> None:
    """The decryptor checks the final chunk and the stream's end only when it is asked
    for the next chunk after the files are complete: that failure must come out."""

    def stream() -> Iterator[bytes]:
        yield STREAM
        raise ChunkAuthenticationError("payload chunk 1: the final chunk is missing")

    with pytest.raises(ChunkAuthenticationError, match="the final chunk is missing"):
        opener._extract(stream(), _entries(STREAM_FILES), tmp_path, (0o600, 0o700), 1)
