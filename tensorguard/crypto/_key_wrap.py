"""Wrapping a data key to X-Wing recipients, bound to a context and a recipient.

For each recipient ``R`` (id ``rid = SHA-256(pk_R)``) and a caller ``binding`` (TGSP
uses the 16-byte package id):

1. ``(ss, kem_ct) = X-Wing.Encapsulate(pk_R)``;
2. ``kek = HKDF-SHA256(ikm=ss, salt=binding,
   info=enc("TG-XWING-KEYWRAP-v1", rid, SHA-256(kem_ct)))``;
3. ``wrapped = AES-256-GCM(kek, nonce=0^96, data_key,
   aad=enc("TG-XWING-KEYWRAP-v1", binding, rid))``,

where ``enc`` length-prefixes each field (:func:`tensorguard.crypto._kdf.encode_info`).
Each ``kek`` comes from a fresh encapsulation and seals exactly one message, so the
fixed nonce is never reused under a key. A block moved to another recipient, another
package, or combined with another block's KEM ciphertext fails to unwrap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tensorguard.crypto._backends import PQCBackend
from tensorguard.crypto._errors import AEADDecryptionError, KeyFormatError
from tensorguard.crypto._kdf import encode_info, hkdf_sha256
from tensorguard.crypto._xwing import (
    XWingPrivateKey,
    XWingPublicKey,
    xwing_encapsulate,
)

KEYWRAP_LABEL = b"TG-XWING-KEYWRAP-v1"
DATA_KEY_SIZE = 32
WRAPPED_KEY_SIZE = DATA_KEY_SIZE + 16
_ZERO_NONCE = bytes(12)


@dataclass(frozen=True)
class WrappedKey:
    """One recipient's copy of a data key."""

    recipient_id: str
    kem_ciphertext: bytes
    wrapped_key: bytes

    def __repr__(self) -> str:
        return f"WrappedKey(recipient_id={self.recipient_id!r})"


def _key_encryption_key(
    shared_secret: bytes, binding: bytes, recipient_id: str, kem_ciphertext: bytes
) -> AESGCM:
    info = encode_info(
        KEYWRAP_LABEL, bytes.fromhex(recipient_id), hashlib.sha256(kem_ciphertext).digest()
    )
    return AESGCM(hkdf_sha256(shared_secret, salt=binding, info=info))


def _wrap_aad(binding: bytes, recipient_id: str) -> bytes:
    return encode_info(KEYWRAP_LABEL, binding, bytes.fromhex(recipient_id))


def wrap_key(
    data_key: bytes,
    recipient: XWingPublicKey,
    *,
    binding: bytes,
    backend: PQCBackend | None = None,
) -> WrappedKey:
    """Encrypt ``data_key`` to ``recipient``, bound to ``binding``."""
    if len(data_key) != DATA_KEY_SIZE:
        raise KeyFormatError(f"data key must be {DATA_KEY_SIZE} bytes, got {len(data_key)}")
    recipient_id = recipient.fingerprint()
    shared_secret, kem_ciphertext = xwing_encapsulate(recipient, backend)
    kek = _key_encryption_key(shared_secret, binding, recipient_id, kem_ciphertext)
    wrapped = kek.encrypt(_ZERO_NONCE, data_key, _wrap_aad(binding, recipient_id))
    return WrappedKey(recipient_id, kem_ciphertext, wrapped)


def unwrap_key(wrapped: WrappedKey, private_key: XWingPrivateKey, *, binding: bytes) -> bytes:
    """Recover the data key or raise :class:`AEADDecryptionError`."""
    own_id = private_key.public_key().fingerprint()
    if wrapped.recipient_id != own_id:
        raise AEADDecryptionError(
            f"key block is addressed to recipient {wrapped.recipient_id[:16]}, "
            f"not to this key ({own_id[:16]})"
        )
    if len(wrapped.wrapped_key) != WRAPPED_KEY_SIZE:
        raise AEADDecryptionError(f"wrapped key must be {WRAPPED_KEY_SIZE} bytes")
    shared_secret = private_key.decapsulate(wrapped.kem_ciphertext)
    kek = _key_encryption_key(shared_secret, binding, own_id, wrapped.kem_ciphertext)
    try:
        return kek.decrypt(_ZERO_NONCE, wrapped.wrapped_key, _wrap_aad(binding, own_id))
    except InvalidTag as exc:
        raise AEADDecryptionError(
            "key block does not unwrap: it was altered, swapped with another recipient's "
            "block, or copied from another package"
        ) from exc
