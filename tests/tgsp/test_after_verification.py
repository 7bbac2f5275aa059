"""Attacks that start after a package verified: only the opener's own checks remain.

A co-recipient holds the package data key (it unwraps it like any recipient), so it can
re-encrypt content that authenticates under AES-GCM. The signed per-file SHA-256 values
are what stop it from changing what the other recipients install.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tensorguard.crypto import XWingPrivateKey
from tensorguard.crypto._stream_aead import StreamEncryptor
from tensorguard.tgsp import (
    FileDigestError,
    PayloadDigestError,
    TrustStore,
    VerificationPolicy,
    open_package,
)
from tensorguard.tgsp._opener import recover_data_key
from tensorguard.tgsp._payload import check_payload_digest, decrypt_payload, derive_payload_key
from tensorguard.tgsp._verifier import verify_handle as real_verify_handle
from tensorguard.tgsp._verifier import verify_header
from tests.tgsp.conftest import SMALL_CHUNK, Packager

_FILE_DIGEST_DIFFERS = r"a\.bin: SHA-256 of the decrypted file differs"
FILES = {"a.bin": os.urandom(3 * SMALL_CHUNK + 100), "b/c.bin": os.urandom(SMALL_CHUNK)}


def _re_encrypt_chunk_0(path: Path, header: Any, payload_offset: int, co_recipient: Any) -> None:
    """The co-recipient's own key unwraps the data key; it seals new content for chunk 0
    with the right key, nonce and associated data, so AES-GCM accepts it."""
    package_id = bytes.fromhex(header.package_id)
    key = derive_payload_key(recover_data_key(header, co_recipient), package_id)
    forged = StreamEncryptor(key, package_id, header.payload.chunk_size).encrypt_chunk(
        b"\x00" * header.payload.chunk_size, final=False
    )
    with path.open("r+b") as handle:
        handle.seek(payload_offset)
        handle.write(forged)


@pytest.mark.parametrize(
    ("path_taken", "refusal", "message"),
    [
        # One pass: the forged segment's signed SHA-256 is checked on the bytes read into
        # memory, before any of them is decrypted.
        ("single-pass", PayloadDigestError, r"payload segment 0 of \d+: SHA-256 does not match"),
        # The same forgery with that segment check removed: the signed per-file digest
        # still refuses it (defence in depth).
        ("single-pass, segment check removed", FileDigestError, _FILE_DIGEST_DIFFERS),
        # Two passes (segments too large for one): the payload verified whole, then the
        # co-recipient rewrites chunk 0 before decryption reads it again.
        ("two-pass", FileDigestError, _FILE_DIGEST_DIFFERS),
    ],
)
def test_co_recipient_re_encrypting_a_chunk_after_verification_is_refused(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
    path_taken: str,
    refusal: type[Exception],
    message: str,
) -> None:
    from tensorguard.tgsp import _opener as opener
    from tensorguard.tgsp._unsealing import _SegmentOpener

    victim, co_recipient = recipients[0], recipients[1]
    path = packager.build(FILES, recipients=[victim, co_recipient]).path
    real_verify_header, real_check_payload = verify_header, check_payload_digest

    def verify_then_re_encrypt(*args: Any, **kwargs: Any) -> Any:
        verified = real_verify_header(*args, **kwargs)
        _re_encrypt_chunk_0(path, verified.header, verified.payload_offset, co_recipient)
        return verified

    def check_then_re_encrypt(handle: Any, offset: int, payload: Any, threads: Any) -> None:
        real_check_payload(handle, offset, payload, threads)
        with path.open("rb") as again:
            header = real_verify_handle(again, trust_store, VerificationPolicy()).header
        _re_encrypt_chunk_0(path, header, offset, co_recipient)

    if path_taken == "two-pass":
        monkeypatch.setattr(opener, "fits_single_pass", lambda _payload: False)
        monkeypatch.setattr(opener, "check_payload_digest", check_then_re_encrypt)
    else:
        monkeypatch.setattr(opener, "verify_header", verify_then_re_encrypt)
    if path_taken == "single-pass, segment check removed":
        monkeypatch.setattr(_SegmentOpener, "_check", lambda *_: None)
    destination = tmp_path / "victim-out"
    with pytest.raises(refusal, match=message):
        open_package(path, destination, recipient_key=victim, trust_store=trust_store)
    assert not destination.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_payload_bytes_beyond_the_manifest_are_refused(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The header's size checks make this unreachable today; the opener refuses it anyway
    (a decryptor that yields more than the manifest's files must not pass silently). This
    is the two-pass path; tests/tgsp/test_single_pass_open.py has the one-pass one."""
    from tensorguard.tgsp import _opener as opener

    path = packager.build(FILES).path

    def decrypt_with_extra(*args: Any, **kwargs: Any) -> Iterator[bytes | memoryview]:
        yield from decrypt_payload(*args, **kwargs)
        yield b"smuggled"

    monkeypatch.setattr(opener, "fits_single_pass", lambda _payload: False)  # two passes
    monkeypatch.setattr(opener, "decrypt_payload", decrypt_with_extra)
    destination = tmp_path / "out"
    with pytest.raises(FileDigestError, match="bytes beyond the files in the manifest"):
        open_package(path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert not destination.exists()
