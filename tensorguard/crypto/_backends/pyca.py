"""PQC backend on pyca/cryptography (OpenSSL 3.5+ ML-DSA and ML-KEM)."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

from tensorguard.crypto._backends.base import (
    MLDSA65_SEED_SIZE,
    MLKEM768_CIPHERTEXT_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    MLKEM768_SEED_SIZE,
)
from tensorguard.crypto._errors import KEMError, KeyFormatError


def _require_length(value: bytes, expected: int, what: str) -> None:
    if len(value) != expected:
        raise KeyFormatError(f"{what} must be {expected} bytes, got {len(value)}")


class CryptographyBackend:
    """ML-DSA-65 and ML-KEM-768 from the ``cryptography`` package (the default)."""

    @property
    def name(self) -> str:
        """Backend name used in configuration and diagnostics."""
        return "cryptography"

    def mldsa65_public_key(self, seed: bytes) -> bytes:
        """Return the ML-DSA-65 public key for a 32-byte seed."""
        return self._mldsa_private(seed).public_key().public_bytes_raw()

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        """Sign with hedged (randomised) ML-DSA-65 and a FIPS 204 context string."""
        return self._mldsa_private(seed).sign(message, context)

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        """Return whether an ML-DSA-65 signature is valid."""
        try:
            key = mldsa.MLDSA65PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise KeyFormatError("ML-DSA-65 public key does not decode") from exc
        try:
            key.verify(signature, message, context)
        except InvalidSignature:
            return False
        return True

    def mlkem768_public_key(self, seed: bytes) -> bytes:
        """Return the ML-KEM-768 encapsulation key for a 64-byte seed."""
        return self._mlkem_private(seed).public_key().public_bytes_raw()

    def mlkem768_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        """Encapsulate to an ML-KEM-768 public key with fresh randomness."""
        _require_length(public_key, MLKEM768_PUBLIC_KEY_SIZE, "ML-KEM-768 public key")
        try:
            key = mlkem.MLKEM768PublicKey.from_public_bytes(public_key)
        except ValueError as exc:
            raise KeyFormatError("ML-KEM-768 public key does not decode") from exc
        shared_secret, ciphertext = key.encapsulate()
        return shared_secret, ciphertext

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        """Decapsulate (FIPS 203 implicit rejection: a bad ciphertext yields a random key)."""
        if len(ciphertext) != MLKEM768_CIPHERTEXT_SIZE:
            raise KEMError(
                f"ML-KEM-768 ciphertext must be {MLKEM768_CIPHERTEXT_SIZE} bytes, "
                f"got {len(ciphertext)}"
            )
        try:
            return self._mlkem_private(seed).decapsulate(ciphertext)
        except ValueError as exc:
            raise KEMError("ML-KEM-768 decapsulation failed") from exc

    @staticmethod
    def _mldsa_private(seed: bytes) -> mldsa.MLDSA65PrivateKey:
        _require_length(seed, MLDSA65_SEED_SIZE, "ML-DSA-65 seed")
        return mldsa.MLDSA65PrivateKey.from_seed_bytes(seed)

    @staticmethod
    def _mlkem_private(seed: bytes) -> mlkem.MLKEM768PrivateKey:
        _require_length(seed, MLKEM768_SEED_SIZE, "ML-KEM-768 seed")
        return mlkem.MLKEM768PrivateKey.from_seed_bytes(seed)
