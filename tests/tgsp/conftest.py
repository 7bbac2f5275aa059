"""Shared TGSP fixtures: keys, a trust store, release metadata, trees and forgery tools."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.crypto._composite import CompositeSigner
from tensorguard.tgsp import (
    BuildResult,
    FileEntry,
    ModelIdentity,
    ReleaseInfo,
    TrustStore,
    build_package,
)
from tensorguard.tgsp._format import (
    PREAMBLE,
    PREAMBLE_SIZE,
    SIGNATURE_CONTEXT,
    SIGNATURE_LENGTH,
    Preamble,
    payload_offset,
)
from tensorguard.tgsp._header import encode_header_json as canonical_dumps

SMALL_CHUNK = 1024
SMALL_SEGMENT = 2
"""Chunks per payload segment in test packages: most of them have several segments."""


@pytest.fixture
def now() -> int:
    """This test's clock (Unix seconds), read when the test starts, not at import."""
    return int(time.time())


@pytest.fixture(scope="session")
def producer() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


@pytest.fixture(scope="session")
def stranger() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


@pytest.fixture(scope="session")
def recipients() -> list[XWingPrivateKey]:
    return [XWingPrivateKey.generate() for _ in range(4)]


@pytest.fixture(scope="session")
def trust_store(producer: CompositeSigningKey) -> TrustStore:
    return TrustStore([producer.public_key()])


def make_release(**overrides: Any) -> ReleaseInfo:
    """Release metadata valid from a minute before this call until an hour after it."""
    now = int(time.time())
    fields: dict[str, Any] = {
        "channel": "stable",
        "version": 7,
        "created_at": now - 60,
        "expires_at": now + 3600,
        "model": ModelIdentity("tinyllama-lora", "ab" * 32),
        "base_model": ModelIdentity("tinyllama", "cd" * 32),
        "round_id": "2025-01-06",
        "gate_decision_digest": "ef" * 32,
        "annotations": {"eval.accuracy": "0.91"},
    }
    fields.update(overrides)
    return ReleaseInfo(**fields)


def make_tree(root: Path, files: Mapping[str, bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


@dataclass
class Packager:
    """Builds packages from in-memory trees with the session's keys."""

    tmp_path: Path
    producer: CompositeSigningKey
    recipients: list[XWingPrivateKey]
    counter: int = 0

    def build(
        self,
        files: Mapping[str, bytes],
        *,
        recipients: list[XWingPrivateKey] | None = None,
        signer: CompositeSigner | None = None,
        chunk_size: int = SMALL_CHUNK,
        segment_chunks: int | None = SMALL_SEGMENT,
        **release: Any,
    ) -> BuildResult:
        self.counter += 1
        source = make_tree(self.tmp_path / f"src{self.counter}", files)
        chosen = recipients if recipients is not None else self.recipients[:1]
        return build_package(
            source,
            self.tmp_path / f"package{self.counter}.tgsp",
            signer=signer or self.producer,
            recipients=[key.public_key() for key in chosen],
            release=make_release(**release),
            chunk_size=chunk_size,
            segment_chunks=segment_chunks,
        )

    def fresh_path(self, name: str) -> Path:
        self.counter += 1
        return self.tmp_path / f"{name}{self.counter}"


@pytest.fixture
def packager(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> Packager:
    return Packager(tmp_path, producer, recipients)


@dataclass(frozen=True)
class Layout:
    """Offsets of a package's regions."""

    header_length: int
    header_start: int
    signature_start: int
    payload_start: int
    size: int


def layout_of(package: bytes) -> Layout:
    header_length = PREAMBLE.unpack(package[:PREAMBLE_SIZE])[4]
    signature_start = PREAMBLE_SIZE + header_length + SIGNATURE_LENGTH.size
    return Layout(
        header_length,
        PREAMBLE_SIZE,
        signature_start,
        payload_offset(header_length),
        len(package),
    )


def header_object(package: bytes) -> dict[str, Any]:
    layout = layout_of(package)
    value: dict[str, Any] = json.loads(
        package[PREAMBLE_SIZE : PREAMBLE_SIZE + layout.header_length]
    )
    return value


def resign(
    package: bytes,
    mutate: Callable[[dict[str, Any]], None],
    signer: CompositeSigningKey,
    payload: bytes | None = None,
) -> bytes:
    """Re-encode a package with a mutated header, validly signed by ``signer``.

    Models a trusted-but-faulty (or compromised) producer: the signature is genuine, so
    any rejection must come from the reader's own checks.
    """
    header = header_object(package)
    mutate(header)
    header_bytes = canonical_dumps(header)
    key_id = bytes.fromhex(signer.public_key().fingerprint())
    preamble = Preamble(key_id, len(header_bytes)).pack()
    signature = signer.sign(preamble + header_bytes, SIGNATURE_CONTEXT)
    body = package[layout_of(package).payload_start :] if payload is None else payload
    return preamble + header_bytes + SIGNATURE_LENGTH.pack(len(signature)) + signature + body


def chunk_ends(package: bytes, chunk_size: int = SMALL_CHUNK) -> list[int]:
    """File offsets where each sealed payload chunk ends (the last is the file size)."""
    layout = layout_of(package)
    sealed = chunk_size + 16
    ends = list(range(layout.payload_start + sealed, layout.size, sealed))
    return [*ends, layout.size]


def file_entries(*contents: bytes) -> tuple[FileEntry, ...]:
    """Manifest entries ``f0``, ``f1``, ... for ``contents``, with their sizes and SHA-256."""
    return tuple(
        FileEntry(f"f{index}", len(data), hashlib.sha256(data).hexdigest())
        for index, data in enumerate(contents)
    )


def assert_no_leftovers(destination: Path) -> None:
    """Neither the destination nor an open's staging directory beside it exists."""
    assert not destination.exists()
    assert [p.name for p in destination.parent.iterdir() if p.name.startswith(".tmp-")] == []
