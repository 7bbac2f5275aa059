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
from tensorguard.tgsp import FileDigestError, TrustStore, open_package
from tensorguard.tgsp._opener import recover_data_key
from tensorguard.tgsp._payload import derive_payload_key
from tensorguard.tgsp._verifier import verify_handle as real_verify_handle
from tests.tgsp.conftest import SMALL_CHUNK, Packager

FILES = {"a.bin": os.urandom(3 * SMALL_CHUNK + 100), "b/c.bin": os.urandom(SMALL_CHUNK)}


def test_co_recipient_re_encrypting_a_chunk_after_verification_fails_the_file_digest(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    victim, co_recipient = recipients[0], recipients[1]
    path = packager.build(FILES, recipients=[victim, co_recipient]).path

    def verify_then_re_encrypt(*args: Any, **kwargs: Any) -> Any:
        verified = real_verify_handle(*args, **kwargs)
        header = verified.header
        package_id = bytes.fromhex(header.package_id)
        # The co-recipient's own key unwraps the data key; it seals new content for
        # chunk 0 with the right key, nonce and associated data, so AES-GCM accepts it.
        key = derive_payload_key(recover_data_key(header, co_recipient), package_id)
        forged = StreamEncryptor(key, package_id, header.payload.chunk_size).encrypt_chunk(
            b"\x00" * header.payload.chunk_size, final=False
        )
        with path.open("r+b") as handle:
            handle.seek(verified.payload_offset)
            handle.write(forged)
        return verified

    monkeypatch.setattr("tensorguard.tgsp._opener.verify_handle", verify_then_re_encrypt)
    destination = tmp_path / "victim-out"
    with pytest.raises(FileDigestError, match=r"a\.bin: SHA-256 of the decrypted file differs"):
        open_package(path, destination, recipient_key=victim, trust_store=trust_store)
    assert not destination.exists()


def test_payload_bytes_beyond_the_manifest_are_refused(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The header's size checks make this unreachable today; the opener refuses it anyway
    (a decryptor that yields more than the manifest's files must not pass silently)."""
    from tensorguard.tgsp import _opener as opener

    path = packager.build(FILES).path
    real_decrypt = opener.decrypt_payload

    def decrypt_with_extra(*args: Any, **kwargs: Any) -> Iterator[bytes]:
        yield from real_decrypt(*args, **kwargs)
        yield b"smuggled"

    monkeypatch.setattr(opener, "decrypt_payload", decrypt_with_extra)
    destination = tmp_path / "out"
    with pytest.raises(FileDigestError, match="bytes beyond the files in the manifest"):
        open_package(path, destination, recipient_key=recipients[0], trust_store=trust_store)
    assert not destination.exists()
