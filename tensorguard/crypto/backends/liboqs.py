"""PQC backend on liboqs through ``liboqs-python``, used only where liboqs is installed.

``import oqs`` without the liboqs shared library tries to download and build it and
then exits the interpreter, so this module never imports ``oqs`` until
:func:`liboqs_library_path` has found the library. Availability is a property of the
machine, checked at construction time.

liboqs-python derives ML-KEM-768 keys from a seed (``generate_keypair_seed``) but has
no seed-based ML-DSA key generation, while our key format stores ML-DSA-65 keys as
their 32-byte FIPS 204 seed. This backend therefore verifies ML-DSA-65 signatures and
performs every ML-KEM-768 operation, and refuses ML-DSA-65 signing with a
:class:`~tensorguard.crypto.errors.BackendUnavailableError` that names the fix.
"""

from __future__ import annotations

import ctypes.util
from typing import Any

from tensorguard.crypto.backends.base import (
    MLKEM768_CIPHERTEXT_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    MLKEM768_SEED_SIZE,
)
from tensorguard.crypto.errors import BackendUnavailableError, KEMError, KeyFormatError

MLDSA65_NAME = "ML-DSA-65"
MLKEM768_NAME = "ML-KEM-768"


def liboqs_library_path() -> str | None:
    """Return the liboqs shared library the dynamic loader would use, or ``None``."""
    return ctypes.util.find_library("oqs")


def _load_oqs_module() -> Any:
    if liboqs_library_path() is None:
        raise BackendUnavailableError(
            "liboqs backend unavailable: the liboqs shared library is not installed; "
            "install liboqs (https://github.com/open-quantum-safe/liboqs) or use the "
            "'cryptography' backend"
        )
    try:
        import oqs  # deferred: importing it without liboqs exits the process
    except ImportError as exc:
        raise BackendUnavailableError(
            "liboqs backend unavailable: liboqs is installed but the 'liboqs-python' "
            "package is not; run `pip install liboqs-python`"
        ) from exc
    return oqs


class LibOQSBackend:
    """ML-DSA-65 verification and ML-KEM-768 from liboqs."""

    def __init__(self) -> None:
        """Load liboqs; raise :class:`BackendUnavailableError` if it is missing."""
        self._oqs = _load_oqs_module()
        enabled_sigs = set(self._oqs.get_enabled_sig_mechanisms())
        enabled_kems = set(self._oqs.get_enabled_kem_mechanisms())
        missing = [
            name
            for name, enabled in ((MLDSA65_NAME, enabled_sigs), (MLKEM768_NAME, enabled_kems))
            if name not in enabled
        ]
        if missing:
            raise BackendUnavailableError(
                f"liboqs backend unavailable: this liboqs build does not enable {missing}; "
                "rebuild liboqs with ML-DSA and ML-KEM enabled"
            )

    @property
    def name(self) -> str:
        """Backend name used in configuration and diagnostics."""
        return "liboqs"

    def mldsa65_public_key(self, seed: bytes) -> bytes:
        """Refused: liboqs-python cannot expand an ML-DSA-65 seed."""
        del seed
        raise self._no_seeded_mldsa()

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        """Refused: liboqs-python cannot expand an ML-DSA-65 seed."""
        del seed, message, context
        raise self._no_seeded_mldsa()

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        """Return whether an ML-DSA-65 signature (with context string) is valid."""
        with self._oqs.Signature(MLDSA65_NAME) as verifier:
            if len(public_key) != verifier.length_public_key:
                raise KeyFormatError("ML-DSA-65 public key has the wrong length")
            return bool(verifier.verify_with_ctx_str(message, signature, context, public_key))

    def mlkem768_public_key(self, seed: bytes) -> bytes:
        """Return the ML-KEM-768 encapsulation key for a 64-byte seed."""
        with self._seeded_kem(seed) as (_, public_key):
            return public_key

    def mlkem768_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        """Encapsulate to an ML-KEM-768 public key; returns ``(secret, ciphertext)``."""
        if len(public_key) != MLKEM768_PUBLIC_KEY_SIZE:
            raise KeyFormatError("ML-KEM-768 public key has the wrong length")
        with self._oqs.KeyEncapsulation(MLKEM768_NAME) as kem:
            ciphertext, shared_secret = kem.encap_secret(public_key)
        return bytes(shared_secret), bytes(ciphertext)

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        """Decapsulate an ML-KEM-768 ciphertext under the key derived from ``seed``."""
        if len(ciphertext) != MLKEM768_CIPHERTEXT_SIZE:
            raise KEMError("ML-KEM-768 ciphertext has the wrong length")
        with self._seeded_kem(seed) as (kem, _):
            return bytes(kem.decap_secret(ciphertext))

    def _seeded_kem(self, seed: bytes) -> _SeededKEM:
        if len(seed) != MLKEM768_SEED_SIZE:
            raise KeyFormatError(f"ML-KEM-768 seed must be {MLKEM768_SEED_SIZE} bytes")
        kem = self._oqs.KeyEncapsulation(MLKEM768_NAME)
        if not hasattr(kem, "generate_keypair_seed"):
            kem.free()
            raise BackendUnavailableError(
                "liboqs backend cannot derive ML-KEM-768 keys from a seed: upgrade "
                "liboqs-python to a release with KeyEncapsulation.generate_keypair_seed"
            )
        return _SeededKEM(kem, seed)

    @staticmethod
    def _no_seeded_mldsa() -> BackendUnavailableError:
        return BackendUnavailableError(
            "liboqs backend cannot sign: liboqs-python has no seed-based ML-DSA-65 key "
            "generation and TensorGuard keys are stored as FIPS 204 seeds; sign with the "
            "'cryptography' backend (TG_PQC_BACKEND=cryptography)"
        )


class _SeededKEM:
    """Context manager holding a liboqs KEM object keyed from a seed."""

    def __init__(self, kem: Any, seed: bytes) -> None:
        self._kem = kem
        self._seed = seed

    def __enter__(self) -> tuple[Any, bytes]:
        public_key = bytes(self._kem.generate_keypair_seed(self._seed))
        return self._kem, public_key

    def __exit__(self, *exc_info: object) -> None:
        self._kem.free()
