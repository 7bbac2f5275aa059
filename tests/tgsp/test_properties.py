"""Property-based tests over paths, manifests, canonical JSON and the header parser."""

from __future__ import annotations

import json
import os
import posixpath
import string
from pathlib import PurePosixPath
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorguard.crypto._key_wrap import WrappedKey
from tensorguard.crypto._stream_aead import chunk_count, ciphertext_length
from tensorguard.tgsp import (
    DEFAULT_LIMITS,
    FileEntry,
    HeaderEncodingError,
    ModelIdentity,
    PackageHeader,
    ReleaseInfo,
    TGSPError,
    UnsafePathError,
)
from tensorguard.tgsp._header import PayloadInfo, decode_header
from tensorguard.tgsp._header import decode_header_json as canonical_loads
from tensorguard.tgsp._header import encode_header_json as canonical_dumps
from tensorguard.tgsp._paths import check_path_set, validate_archive_path

HEX = "0123456789abcdef"
hex64 = st.text(HEX, min_size=64, max_size=64)
name_chars = st.characters(blacklist_categories=("Cs", "Cc", "Cf"), blacklist_characters="/\\:")
component = st.text(name_chars, min_size=1, max_size=12)
raw_paths = st.lists(component, min_size=1, max_size=5).map("/".join)
any_text = st.text(max_size=40)


def _safe(path: str) -> bool:
    try:
        validate_archive_path(path)
    except UnsafePathError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(
    path=st.one_of(
        any_text,
        raw_paths,
        st.lists(st.sampled_from(["a", "..", ".", "", "/", "b"]), max_size=6).map("/".join),
    )
)
def test_accepted_paths_stay_inside_the_root(path: str) -> None:
    if not _safe(path):
        return
    root = "/extract/root"
    joined = posixpath.normpath(posixpath.join(root, path))
    assert joined.startswith(root + "/")
    assert joined == posixpath.join(root, path)  # normalisation changed nothing
    assert ".." not in PurePosixPath(path).parts
    assert not path.startswith("/")


@st.composite
def manifests(draw: st.DrawFn) -> tuple[FileEntry, ...]:
    paths = draw(st.lists(raw_paths.filter(_safe), max_size=8, unique=True))
    try:
        check_path_set(paths)
    except UnsafePathError:
        paths = []
    sizes = draw(st.lists(st.integers(0, 2**40), min_size=len(paths), max_size=len(paths)))
    digests = draw(st.lists(hex64, min_size=len(paths), max_size=len(paths)))
    return tuple(
        FileEntry(path, size, digest)
        for path, size, digest in sorted(zip(paths, sizes, digests, strict=True))
    )


identities = st.builds(
    ModelIdentity,
    st.text(string.ascii_letters + "-_. ", min_size=1, max_size=30).filter(str.strip),
    hex64,
)


@st.composite
def headers(draw: st.DrawFn) -> PackageHeader:
    files = draw(manifests())
    created = draw(st.integers(0, 2**40))
    release = ReleaseInfo(
        channel=draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)),
        version=draw(st.integers(0, 2**53 - 1)),
        created_at=created,
        expires_at=created + draw(st.integers(1, 2**40)),
        model=draw(identities),
        base_model=draw(st.one_of(st.none(), identities)),
        round_id=draw(st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9-]{1,20}", fullmatch=True))),
        gate_decision_digest=draw(st.one_of(st.none(), hex64)),
        annotations=draw(
            st.dictionaries(
                st.from_regex(r"[a-z0-9][a-z0-9.]{0,10}", fullmatch=True),
                st.text(name_chars, min_size=1, max_size=10),
                max_size=3,
            )
        ),
    )
    recipient_ids = sorted(draw(st.lists(hex64, min_size=1, max_size=3, unique=True)))
    recipients = tuple(
        WrappedKey(
            rid,
            draw(st.binary(min_size=1120, max_size=1120)),
            draw(st.binary(min_size=48, max_size=48)),
        )
        for rid in recipient_ids
    )
    total = sum(entry.size for entry in files)
    chunk = draw(st.integers(1024, 16 * 1024 * 1024))
    chunks = chunk_count(total, chunk)
    per_segment = draw(st.integers(1, 5))
    payload = PayloadInfo(
        chunk,
        chunks,
        ciphertext_length(total, chunk),
        per_segment,
        tuple(draw(hex64) for _ in range(-(-chunks // per_segment))),
    )
    return PackageHeader(
        package_id=draw(st.text(HEX, min_size=32, max_size=32)),
        producer_key_id=draw(hex64),
        release=release,
        files=files,
        recipients=recipients,
        payload=payload,
    )


@settings(max_examples=150, deadline=None)
@given(header=headers())
def test_header_round_trips_exactly(header: PackageHeader) -> None:
    encoded = header.encode(DEFAULT_LIMITS)
    decoded = decode_header(encoded, DEFAULT_LIMITS)
    assert decoded == header
    assert decoded.encode(DEFAULT_LIMITS) == encoded


@settings(max_examples=150, deadline=None)
@given(header=headers(), data=st.data())
def test_mutated_header_bytes_never_crash_the_parser(
    header: PackageHeader, data: st.DataObject
) -> None:
    encoded = bytearray(header.encode(DEFAULT_LIMITS))
    for _ in range(data.draw(st.integers(1, 4))):
        operation = data.draw(st.sampled_from(["flip", "delete", "insert"]))
        position = data.draw(st.integers(0, len(encoded) - 1))
        if operation == "flip":
            encoded[position] ^= data.draw(st.integers(1, 255))
        elif operation == "delete":
            del encoded[position]
        else:
            encoded.insert(position, data.draw(st.integers(0, 255)))
    try:
        parsed = decode_header(bytes(encoded), DEFAULT_LIMITS)
    except TGSPError:
        return
    # The rare mutation that still parses must describe itself canonically.
    assert parsed.encode(DEFAULT_LIMITS) == bytes(encoded)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_cleanly(blob: bytes) -> None:
    with pytest.raises(TGSPError):
        decode_header(blob, DEFAULT_LIMITS)


json_values = st.recursive(
    st.one_of(st.integers(0, 2**53 - 1), st.text(max_size=20).filter(lambda s: _encodable(s))),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(string.printable, max_size=8), children, max_size=4),
    ),
    max_leaves=20,
)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(value=json_values)
def test_canonical_json_round_trips_and_is_unique(value: Any) -> None:
    encoded = canonical_dumps(value)
    assert canonical_loads(encoded) == value
    # Independent oracle: for this subset, sorted compact standard JSON is RFC 8785.
    oracle = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    assert encoded == oracle.encode("utf-8")
    spaced = json.dumps(value, ensure_ascii=False, indent=1).encode()
    if spaced != encoded:
        with pytest.raises(HeaderEncodingError):
            canonical_loads(spaced)
    escaped = json.dumps(value, ensure_ascii=True, sort_keys=True, separators=(",", ":")).encode()
    if escaped != encoded:
        with pytest.raises(HeaderEncodingError):
            canonical_loads(escaped)


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,"a":2}',
        b'{"a":1.0}',
        b'{"a":NaN}',
        b'{"a":true}',
        b'{"a":null}',
        b'{"a":-1}',
        b'{"b":1,"a":2}',
        b'{"a":9007199254740992}',
        b'["\xff"]',
        b"[" * 100000,
        b'"\\u00e9"',
    ],
    ids=[
        "duplicate",
        "float",
        "nan",
        "bool",
        "null",
        "negative",
        "unsorted",
        "unsafe-int",
        "bad-utf8",
        "deep",
        "needless-escape",
    ],
)
def test_non_canonical_json_is_refused(text: bytes) -> None:
    with pytest.raises(HeaderEncodingError):
        canonical_loads(text)


def test_header_fuzz_from_real_package_prefix() -> None:
    # Random bytes of every small length never pass as a header.
    for size in range(0, 64):
        with pytest.raises(TGSPError):
            decode_header(os.urandom(size), DEFAULT_LIMITS)
