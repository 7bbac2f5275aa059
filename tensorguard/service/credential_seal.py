"""Sealing of stored connector credentials: AES-256-GCM under a key derived from
``TG_SECRET_KEY`` with HKDF-SHA256 (its own salt and info, so the key is never the JWT
key), bound to the connector's name and kind as associated data.

A sealed value is ``v1:`` followed by base64 of ``nonce (12 bytes) || ciphertext+tag``.
Unsealing with another secret, or under another connector's name, fails.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tensorguard.crypto import encode_info, hkdf_sha256
from tensorguard.service.errors import ServiceError

SEAL_PREFIX = "v1:"
NONCE_BYTES = 12
_SALT = b"tensorguard/service/connector-credentials/v1"


class CredentialSealError(ServiceError):
    """Stored credentials do not unseal: another secret key, another connector, or edited."""


class CredentialSeal:
    """Seals and unseals connector credentials under the service's secret key."""

    __slots__ = ("_aead",)

    def __init__(self, secret_key: bytes) -> None:
        """Derive the sealing key from the service secret (``TG_SECRET_KEY``)."""
        key = hkdf_sha256(secret_key, salt=_SALT, info=encode_info(b"connector-credentials"))
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return "CredentialSeal(<key hidden>)"

    @staticmethod
    def _binding(name: str, kind: str) -> bytes:
        return encode_info(b"connector", name.encode(), kind.encode())

    def seal(self, plaintext: str, *, name: str, kind: str) -> str:
        """Encrypt ``plaintext`` for the connector ``name`` of ``kind``."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), self._binding(name, kind))
        return SEAL_PREFIX + base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, sealed: str, *, name: str, kind: str) -> str:
        """Decrypt what :meth:`seal` made for the same connector."""
        try:
            if not sealed.startswith(SEAL_PREFIX):
                raise ValueError("unknown format")
            raw = base64.b64decode(sealed[len(SEAL_PREFIX) :], validate=True)
            plain = self._aead.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], self._binding(name, kind)
            )
        except (InvalidTag, ValueError, binascii.Error):
            raise CredentialSealError(
                f"the stored credentials of connector {name!r} do not unseal: TG_SECRET_KEY "
                "changed or the row was edited; store the credentials again"
            ) from None
        return plain.decode()
