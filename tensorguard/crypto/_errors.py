"""Exception types raised by :mod:`tensorguard.crypto`.

Every failure is a subclass of :class:`CryptoError` (itself a
:class:`~tensorguard.errors.TensorGuardError`), so callers can catch the whole area or
one precise failure. Messages never contain key material, shared secrets or plaintext.
"""

from __future__ import annotations

from tensorguard.errors import TensorGuardError


class CryptoError(TensorGuardError):
    """Root of every deliberate failure in the cryptography layer."""


class KeyFormatError(CryptoError):
    """Key bytes have the wrong length or do not decode to a valid key."""


class SignatureError(CryptoError):
    """A signature is malformed or does not verify under the given public key."""


class KEMError(CryptoError):
    """A key encapsulation or decapsulation could not be performed."""


class AEADDecryptionError(CryptoError):
    """Authenticated (AES-GCM) decryption failed: wrong key, or the ciphertext was altered."""


class StreamTruncatedError(AEADDecryptionError):
    """An encrypted stream ended before its final chunk."""


class StreamFormatError(AEADDecryptionError):
    """An encrypted stream is structurally invalid (oversized chunk, data after the end)."""


class BackendUnavailableError(CryptoError):
    """The requested post-quantum backend is missing or cannot perform an operation."""


class SigningUnsupportedError(BackendUnavailableError):
    """The backend verifies ML-DSA-65 signatures but cannot make them (liboqs)."""
