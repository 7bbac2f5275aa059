"""The post-quantum primitive interface every backend implements.

Keys cross this interface in their standard encodings: ML-DSA-65 private keys as the
32-byte FIPS 204 seed ``xi``, ML-KEM-768 private keys as the 64-byte FIPS 203 seed
``d || z``, public keys, signatures and ciphertexts as their raw FIPS encodings. A
backend therefore never defines its own key format, and keys move between backends.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

MLDSA65_SEED_SIZE = 32
MLDSA65_PUBLIC_KEY_SIZE = 1952
MLDSA65_SIGNATURE_SIZE = 3309
MLKEM768_SEED_SIZE = 64
MLKEM768_PUBLIC_KEY_SIZE = 1184
MLKEM768_CIPHERTEXT_SIZE = 1088
MLKEM768_SHARED_SECRET_SIZE = 32
MLKEM768_ENCAPSULATION_RANDOMNESS_SIZE = 32


@runtime_checkable
class PQCBackend(Protocol):
    """ML-DSA-65 (FIPS 204) and ML-KEM-768 (FIPS 203) operations."""

    @property
    def name(self) -> str:
        """Short backend name, e.g. ``"cryptography"`` or ``"liboqs"``."""
        ...

    def mldsa65_public_key(self, seed: bytes) -> bytes:
        """Return the ML-DSA-65 public key derived from a 32-byte seed."""
        ...

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        """Sign ``message`` (pure ML-DSA, FIPS 204 context string ``context``)."""
        ...

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        """Return whether ``signature`` is valid; never raise for a bad signature."""
        ...

    def mlkem768_public_key(self, seed: bytes) -> bytes:
        """Return the ML-KEM-768 encapsulation key derived from a 64-byte seed."""
        ...

    def mlkem768_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        """Return ``(shared_secret, ciphertext)`` for a fresh random encapsulation."""
        ...

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        """Return the shared secret for ``ciphertext`` under the key from ``seed``."""
        ...


@runtime_checkable
class DerandomizedMLKEM(Protocol):
    """Optional capability: ML-KEM-768 encapsulation with caller-supplied randomness.

    Only known-answer tests need this (the X-Wing draft's vectors fix the randomness);
    production encapsulation always draws fresh randomness.
    """

    def mlkem768_encapsulate_derand(
        self, public_key: bytes, randomness: bytes
    ) -> tuple[bytes, bytes]:
        """Return ``(shared_secret, ciphertext)`` using the 32-byte ``randomness``."""
        ...
