"""TGSP round trips: 1..N recipients, empty to large files, flat memory."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tensorguard.crypto import XWingPrivateKey
from tensorguard.tgsp import (
    NotARecipientError,
    TrustStore,
    build_package,
    inspect_package,
    open_package,
    verify_package,
)
from tensorguard.tgsp._format import MAGIC
from tests.tgsp.conftest import SMALL_CHUNK, Packager, make_release


def read_tree(root: Path) -> dict[str, bytes]:
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize("recipient_count", [1, 2, 4])
def test_every_recipient_opens_the_package(
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    recipient_count: int,
) -> None:
    files = {"adapter_model.safetensors": os.urandom(5000), "adapter_config.json": b"{}"}
    result = packager.build(files, recipients=recipients[:recipient_count])
    assert len(result.header.recipients) == recipient_count
    for key in recipients[:recipient_count]:
        destination = packager.fresh_path("out")
        opened = open_package(result.path, destination, recipient_key=key, trust_store=trust_store)
        assert read_tree(destination) == files
        assert opened.header == result.header
    outsider = recipients[recipient_count] if recipient_count < len(recipients) else None
    if outsider is not None:
        with pytest.raises(NotARecipientError):
            open_package(
                result.path,
                packager.fresh_path("out"),
                recipient_key=outsider,
                trust_store=trust_store,
            )


@pytest.mark.parametrize(
    "sizes",
    [
        [],
        [0],
        [1],
        [SMALL_CHUNK - 1],
        [SMALL_CHUNK],
        [SMALL_CHUNK + 1],
        [0, SMALL_CHUNK, 0, 3 * SMALL_CHUNK + 7, 1],
        [SMALL_CHUNK // 2, SMALL_CHUNK // 2],
    ],
    ids=lambda sizes: "+".join(map(str, sizes)) or "no-files",
)
def test_round_trip_across_chunk_boundaries(
    packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore, sizes: list[int]
) -> None:
    files = {
        f"dir{index % 2}/file{index}.bin": os.urandom(size) for index, size in enumerate(sizes)
    }
    result = packager.build(files)
    assert result.header.total_size == sum(sizes)
    destination = packager.fresh_path("out")
    open_package(result.path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert read_tree(destination) == files


def test_manifest_records_paths_sizes_and_digests(packager: Packager) -> None:
    files = {"b.bin": b"bee", "a/c.txt": b"", "a/b/z": os.urandom(100)}
    result = packager.build(files, version=12, channel="canary")
    manifest = {entry.path: (entry.size, entry.sha256) for entry in result.header.files}
    assert manifest == {
        path: (len(content), hashlib.sha256(content).hexdigest()) for path, content in files.items()
    }
    assert [entry.path for entry in result.header.files] == sorted(files)
    assert result.header.release.version == 12
    assert result.header.release.channel == "canary"
    assert result.header.producer_key_id == packager.producer.public_key().fingerprint()


def test_inspect_needs_no_keys_and_matches_build(packager: Packager) -> None:
    result = packager.build({"weights.bin": os.urandom(3000)})
    inspected = inspect_package(result.path)
    assert inspected.header == result.header
    assert inspected.package_size == result.path.stat().st_size == result.package_size
    assert result.path.read_bytes().startswith(MAGIC)


def test_package_never_contains_a_public_key(packager: Packager) -> None:
    result = packager.build({"x": b"data"})
    raw = result.path.read_bytes()
    assert packager.producer.public_key().public_bytes() not in raw
    assert packager.producer.public_key().ed25519_public_bytes not in raw


def test_single_file_source(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(os.urandom(2500))
    output = tmp_path / "single.tgsp"
    build_package(
        source,
        output,
        signer=packager.producer,
        recipients=[recipients[0].public_key()],
        release=make_release(),
    )
    destination = tmp_path / "single-out"
    open_package(output, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert read_tree(destination) == {"model.onnx": source.read_bytes()}


def test_verify_returns_pinned_signer(packager: Packager, trust_store: TrustStore) -> None:
    result = packager.build({"f": b"1"})
    verified = verify_package(result.path, trust_store)
    assert verified.signer == packager.producer.public_key()
    assert verified.header == result.header


def _sparse_tree(root: Path, sizes: dict[str, int]) -> None:
    root.mkdir()
    for name, size in sizes.items():
        with (root / name).open("wb") as handle:
            handle.write(os.urandom(4096))
            handle.truncate(size)


def test_64_mib_file_round_trips(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    # Peak memory of build and open is measured by bench/bench_tgsp.py, not asserted here.
    sizes = {"large.bin": 64 * 1024 * 1024 + 5, "small.bin": 10}
    _sparse_tree(tmp_path / "big", sizes)
    output = tmp_path / "big.tgsp"
    build_package(
        tmp_path / "big",
        output,
        signer=packager.producer,
        recipients=[recipients[0].public_key()],
        release=make_release(),
    )
    destination = tmp_path / "big-out"
    opened = open_package(output, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert (destination / "large.bin").stat().st_size == sizes["large.bin"]
    digests = {entry.path: entry.sha256 for entry in opened.header.files}
    with (destination / "large.bin").open("rb") as handle:
        assert hashlib.file_digest(handle, "sha256").hexdigest() == digests["large.bin"]


@pytest.mark.slow
def test_multi_gigabyte_round_trip(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> None:
    # 2.25 GiB: past the 2**31 boundary where 32-bit offsets or sizes would break.
    size = 2 * 1024**3 + 256 * 1024**2
    _sparse_tree(tmp_path / "huge", {"weights.bin": size})
    output = tmp_path / "huge.tgsp"
    result = build_package(
        tmp_path / "huge",
        output,
        signer=packager.producer,
        recipients=[recipients[0].public_key()],
        release=make_release(),
    )
    assert result.package_size > size
    destination = tmp_path / "huge-out"
    open_package(output, destination, recipient_key=recipients[0], trust_store=trust_store)
    extracted = destination / "weights.bin"
    assert extracted.stat().st_size == size
    with extracted.open("rb") as handle:
        assert hashlib.file_digest(handle, "sha256").hexdigest() == result.header.files[0].sha256
