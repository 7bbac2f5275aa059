"""The default PQC backend with kyber-py's ML-KEM-768 encapsulation (shared by tests).

kyber-py is an independent FIPS 203 implementation; with fixed randomness, the
ciphertext it produces can be recomputed by a test and recognised in a wrapped block or
a package's key blocks.
"""

from __future__ import annotations

from kyber_py.ml_kem import ML_KEM_768

from tensorguard.crypto import get_backend


class KyberPyEncapsulation:
    """The default backend, except that ML-KEM encapsulation is kyber-py's with
    :attr:`RANDOMNESS` as its randomness."""

    RANDOMNESS = bytes(range(32))

    def __init__(self) -> None:
        self._default = get_backend()

    @property
    def name(self) -> str:
        return "kyber-py encapsulation"

    def mldsa65_public_key(self, seed: bytes) -> bytes:
        return self._default.mldsa65_public_key(seed)

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        return self._default.mldsa65_sign(seed, message, context)

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        return self._default.mldsa65_verify(public_key, message, signature, context)

    def mlkem768_public_key(self, seed: bytes) -> bytes:
        return self._default.mlkem768_public_key(seed)

    def mlkem768_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        shared_secret, ciphertext = ML_KEM_768._encaps_internal(public_key, self.RANDOMNESS)
        return shared_secret, ciphertext

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        return self._default.mlkem768_decapsulate(seed, ciphertext)
