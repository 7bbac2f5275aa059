"""An edge node's request-signing key on disk: Ed25519, PKCS#8 PEM, mode 0600.

The node generates the key, keeps the private half in this file and enrols only the
public half (``POST /v1/nodes``). Standard library and ``cryptography`` only, so the
edge base install can use it.
"""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tensorguard.durable import DurableWriteError, atomic_write_bytes
from tensorguard.service.errors import ServiceError


class NodeKeyError(ServiceError):
    """The node's request-signing key file cannot be written or used."""


def write_node_key(path: Path, key: Ed25519PrivateKey) -> None:
    """Write ``key`` to the new file ``path`` (PKCS#8 PEM, mode 0600; never overwritten)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    try:
        atomic_write_bytes(path, pem, mode=0o600, overwrite=False)
    except DurableWriteError as exc:
        raise NodeKeyError(f"cannot create node key file {path}: {exc}") from exc


def load_node_key(path: Path) -> Ed25519PrivateKey:
    """Read the node's Ed25519 key; refuse a file that group or others can access."""
    try:
        info = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise NodeKeyError(f"cannot read node key file {path}: {exc.strerror or exc}") from exc
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise NodeKeyError(
            f"node key file {path} is accessible by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); run `chmod 600 {path}`"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise NodeKeyError(
            f"node key file {path} is not an unencrypted PKCS#8 PEM private key"
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise NodeKeyError(f"node key file {path} holds a {type(key).__name__}, not Ed25519")
    return key
