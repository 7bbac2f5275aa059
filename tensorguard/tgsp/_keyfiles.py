"""A simple on-disk key file format for the ``tensorguard tgsp`` commands.

One JSON object per file (UTF-8)::

    {"format": "tensorguard-key", "version": 1,
     "type": "composite-signing-key" | "composite-public-key"
           | "xwing-private-key" | "xwing-public-key",
     "algorithm": "COMPSIG-MLDSA65-Ed25519-SHA512" | "X-Wing",
     "key_id": "<hex SHA-256 of the public key encoding>",
     "private_key": "<base64>"   (private types: 64-byte composite / 32-byte X-Wing seed)
     "public_key": "<base64>"}   (public types: 1984-byte composite / 1216-byte X-Wing)

Private key files hold **unencrypted** key material: they are created with mode 0600
and refused when readable by group or others. They suit development and tests;
production signers and recipients should use :mod:`tensorguard.keys` providers
(keys encrypted at rest, or held in a PKCS#11 token). ``key_id`` is recomputed on load
and must match, which catches a truncated or hand-edited file.
"""

from __future__ import annotations

import base64
import binascii
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tensorguard.codec import CodecError, parse_json_object
from tensorguard.crypto import (
    COMPOSITE_ALGORITHM,
    CompositeSigningKey,
    CompositeVerifyKey,
    CryptoError,
    XWingPrivateKey,
    XWingPublicKey,
)
from tensorguard.durable import DurableWriteError, atomic_write_bytes
from tensorguard.tgsp._errors import KeyFileError
from tensorguard.tgsp._format import KEM_ALGORITHM

KEY_FILE_FORMAT = "tensorguard-key"
KEY_FILE_VERSION = 1
SIGNING_KEY = "composite-signing-key"
VERIFY_KEY = "composite-public-key"
RECIPIENT_PRIVATE_KEY = "xwing-private-key"
RECIPIENT_PUBLIC_KEY = "xwing-public-key"

AnyKey = CompositeSigningKey | CompositeVerifyKey | XWingPrivateKey | XWingPublicKey
KeyT = TypeVar("KeyT", CompositeSigningKey, CompositeVerifyKey, XWingPrivateKey, XWingPublicKey)


def _describe(key: AnyKey) -> tuple[str, str, str, str, bytes]:
    """Return (type, algorithm, key_id, field, material) for a key."""
    if isinstance(key, CompositeSigningKey):
        return (
            SIGNING_KEY,
            COMPOSITE_ALGORITHM,
            key.public_key().fingerprint(),
            "private_key",
            key.private_bytes(),
        )
    if isinstance(key, CompositeVerifyKey):
        return VERIFY_KEY, COMPOSITE_ALGORITHM, key.fingerprint(), "public_key", key.public_bytes()
    if isinstance(key, XWingPrivateKey):
        return (
            RECIPIENT_PRIVATE_KEY,
            KEM_ALGORITHM,
            key.public_key().fingerprint(),
            "private_key",
            key.private_bytes(),
        )
    return RECIPIENT_PUBLIC_KEY, KEM_ALGORITHM, key.fingerprint(), "public_key", key.public_bytes()


def write_key_file(path: Path, key: AnyKey) -> None:
    """Write ``key`` to the new file ``path`` (0600 for private keys, 0644 for public)."""
    key_type, algorithm, key_id, field, material = _describe(key)
    document = {
        "format": KEY_FILE_FORMAT,
        "version": KEY_FILE_VERSION,
        "type": key_type,
        "algorithm": algorithm,
        "key_id": key_id,
        field: base64.b64encode(material).decode("ascii"),
    }
    mode = 0o600 if field == "private_key" else 0o644
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    try:
        atomic_write_bytes(path, text.encode("utf-8"), mode=mode, overwrite=False)
    except DurableWriteError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc}") from exc


def _read_document(path: Path, expected_type: str) -> tuple[dict[str, Any], bytes]:
    try:
        info = path.stat()
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
    private = expected_type in (SIGNING_KEY, RECIPIENT_PRIVATE_KEY)
    if private and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"private key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )
    try:
        document = parse_json_object(text, what=f"key file {path}")
    except CodecError as exc:
        raise KeyFileError(f"{exc}; the file is damaged or not a key file") from exc
    if document.get("format") != KEY_FILE_FORMAT:
        raise KeyFileError(f"{path} is not a '{KEY_FILE_FORMAT}' key file")
    if document.get("version") != KEY_FILE_VERSION:
        raise KeyFileError(f"{path}: unsupported key file version {document.get('version')!r}")
    if document.get("type") != expected_type:
        raise KeyFileError(
            f"{path} holds a {document.get('type')!r}, but a {expected_type!r} is needed here"
        )
    field = "private_key" if private else "public_key"
    try:
        material = base64.b64decode(str(document.get(field, "")), validate=True)
    except binascii.Error as exc:
        raise KeyFileError(f"{path}: {field} is not valid base64") from exc
    return document, material


def _load(path: Path, expected_type: str, decode: Callable[[bytes], KeyT]) -> KeyT:
    document, material = _read_document(path, expected_type)
    try:
        key = decode(material)
    except CryptoError as exc:
        raise KeyFileError(f"{path}: {exc}") from exc
    if document.get("key_id") != _describe(key)[2]:
        raise KeyFileError(f"{path}: key_id does not match the key material; the file is damaged")
    return key


def load_signing_key(path: Path) -> CompositeSigningKey:
    """Load a composite signing key file."""
    return _load(path, SIGNING_KEY, CompositeSigningKey.from_private_bytes)


def load_verify_key(path: Path) -> CompositeVerifyKey:
    """Load a composite public key file."""
    return _load(path, VERIFY_KEY, CompositeVerifyKey.from_public_bytes)


def load_recipient_private_key(path: Path) -> XWingPrivateKey:
    """Load an X-Wing private key file."""
    return _load(path, RECIPIENT_PRIVATE_KEY, XWingPrivateKey.from_seed)


def load_recipient_public_key(path: Path) -> XWingPublicKey:
    """Load an X-Wing public key file."""
    return _load(path, RECIPIENT_PUBLIC_KEY, XWingPublicKey.from_public_bytes)
