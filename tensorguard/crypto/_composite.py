"""Composite ML-DSA-65 + Ed25519 signatures (IETF LAMPS composite signatures draft).

Algorithm ``id-MLDSA65-Ed25519-SHA512``, as specified by
draft-ietf-lamps-pq-composite-sigs and checked against its published test vector:

* message representative ``M' = Prefix || Label || len(ctx) || ctx || SHA-512(M)``,
  where ``Prefix`` is the ASCII string ``CompositeAlgorithmSignatures2025``, ``Label``
  is ``COMPSIG-MLDSA65-Ed25519-SHA512``, ``len(ctx)`` is one byte and ``ctx`` is the
  application context (at most 255 bytes);
* ML-DSA-65 signs ``M'`` with the FIPS 204 context string set to ``Label``; Ed25519
  signs ``M'`` (pure Ed25519, no context);
* the signature is ``mldsa65_sig (3309 bytes) || ed25519_sig (64 bytes)``;
* the public key is ``mldsa65_pk (1952 bytes) || ed25519_pk (32 bytes)``;
* the private key is ``mldsa65_seed (32 bytes) || ed25519_private (32 bytes)``.

A signature is valid only when **both** component signatures verify. The key
fingerprint used throughout TensorGuard (trust stores, package headers) is the
lower-case hex SHA-256 of the 1984-byte composite public key encoding.

Besides the software key, this module exposes the pieces a hardware-backed signer
needs to produce the same signature with its Ed25519 half made inside a token:
:func:`composite_message_representative`, :func:`sign_mldsa_component` and
:func:`assemble_composite_signature`; any object with ``public_key()`` and
``sign(message, context)`` satisfies :class:`CompositeSigner`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from tensorguard.crypto._backends import PQCBackend, get_backend
from tensorguard.crypto._backends.base import (
    MLDSA65_PUBLIC_KEY_SIZE,
    MLDSA65_SEED_SIZE,
    MLDSA65_SIGNATURE_SIZE,
)
from tensorguard.crypto._errors import CryptoError, KeyFormatError, SignatureError

COMPOSITE_PREFIX = b"CompositeAlgorithmSignatures2025"
COMPOSITE_LABEL = b"COMPSIG-MLDSA65-Ed25519-SHA512"
COMPOSITE_ALGORITHM = COMPOSITE_LABEL.decode("ascii")
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_PRIVATE_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
PUBLIC_KEY_SIZE = MLDSA65_PUBLIC_KEY_SIZE + ED25519_PUBLIC_KEY_SIZE
PRIVATE_KEY_SIZE = MLDSA65_SEED_SIZE + ED25519_PRIVATE_KEY_SIZE
SIGNATURE_SIZE = MLDSA65_SIGNATURE_SIZE + ED25519_SIGNATURE_SIZE
MAX_CONTEXT_SIZE = 255


def composite_message_representative(message: bytes, context: bytes = b"") -> bytes:
    """Return ``M'``, the bytes both component algorithms sign.

    ``M' = Prefix || Label || len(ctx) || ctx || SHA-512(message)``.
    """
    if len(context) > MAX_CONTEXT_SIZE:
        raise CryptoError(
            f"signature context is {len(context)} bytes; the composite draft allows at "
            f"most {MAX_CONTEXT_SIZE}"
        )
    return (
        COMPOSITE_PREFIX
        + COMPOSITE_LABEL
        + bytes([len(context)])
        + context
        + hashlib.sha512(message).digest()
    )


def sign_mldsa_component(
    mldsa_seed: bytes, representative: bytes, backend: PQCBackend | None = None
) -> bytes:
    """Return the ML-DSA-65 component signature over a message representative.

    The FIPS 204 context string is the composite label, as the draft requires.
    """
    pqc = backend if backend is not None else get_backend()
    return pqc.mldsa65_sign(mldsa_seed, representative, COMPOSITE_LABEL)


def assemble_composite_signature(mldsa_signature: bytes, ed25519_signature: bytes) -> bytes:
    """Concatenate the component signatures into the composite encoding."""
    if len(mldsa_signature) != MLDSA65_SIGNATURE_SIZE:
        raise SignatureError(
            f"ML-DSA-65 component signature must be {MLDSA65_SIGNATURE_SIZE} bytes, "
            f"got {len(mldsa_signature)}"
        )
    if len(ed25519_signature) != ED25519_SIGNATURE_SIZE:
        raise SignatureError(
            f"Ed25519 component signature must be {ED25519_SIGNATURE_SIZE} bytes, "
            f"got {len(ed25519_signature)}"
        )
    return mldsa_signature + ed25519_signature


def split_composite_signature(signature: bytes) -> tuple[bytes, bytes]:
    """Return ``(mldsa_signature, ed25519_signature)`` from a composite signature."""
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(
            f"composite signature must be {SIGNATURE_SIZE} bytes, got {len(signature)}"
        )
    return signature[:MLDSA65_SIGNATURE_SIZE], signature[MLDSA65_SIGNATURE_SIZE:]


class CompositeVerifyKey:
    """A composite ML-DSA-65 + Ed25519 public key."""

    __slots__ = ("_backend", "_ed25519", "_encoded")

    def __init__(
        self, mldsa_public: bytes, ed25519_public: bytes, backend: PQCBackend | None = None
    ) -> None:
        """Build a key from its component public keys (raw FIPS 204 / RFC 8032)."""
        if len(mldsa_public) != MLDSA65_PUBLIC_KEY_SIZE:
            raise KeyFormatError(
                f"ML-DSA-65 public key must be {MLDSA65_PUBLIC_KEY_SIZE} bytes, "
                f"got {len(mldsa_public)}"
            )
        try:
            self._ed25519 = ed25519.Ed25519PublicKey.from_public_bytes(ed25519_public)
        except ValueError as exc:
            raise KeyFormatError("Ed25519 public key does not decode") from exc
        self._encoded = bytes(mldsa_public) + bytes(ed25519_public)
        self._backend = backend

    @classmethod
    def from_public_bytes(
        cls, data: bytes, backend: PQCBackend | None = None
    ) -> CompositeVerifyKey:
        """Decode the 1984-byte composite public key encoding."""
        if len(data) != PUBLIC_KEY_SIZE:
            raise KeyFormatError(
                f"composite public key must be {PUBLIC_KEY_SIZE} bytes, got {len(data)}"
            )
        return cls(data[:MLDSA65_PUBLIC_KEY_SIZE], data[MLDSA65_PUBLIC_KEY_SIZE:], backend)

    def public_bytes(self) -> bytes:
        """Return ``mldsa65_pk || ed25519_pk``."""
        return self._encoded

    @property
    def mldsa_public_bytes(self) -> bytes:
        """The ML-DSA-65 component public key."""
        return self._encoded[:MLDSA65_PUBLIC_KEY_SIZE]

    @property
    def ed25519_public_bytes(self) -> bytes:
        """The Ed25519 component public key."""
        return self._encoded[MLDSA65_PUBLIC_KEY_SIZE:]

    def fingerprint(self) -> str:
        """Return the key id: lower-case hex SHA-256 of :meth:`public_bytes`."""
        return hashlib.sha256(self._encoded).hexdigest()

    def verify(self, message: bytes, signature: bytes, context: bytes = b"") -> None:
        """Raise :class:`SignatureError` unless both component signatures verify."""
        mldsa_signature, ed25519_signature = split_composite_signature(signature)
        try:
            representative = composite_message_representative(message, context)
        except CryptoError as exc:
            raise SignatureError(str(exc)) from exc
        backend = self._backend if self._backend is not None else get_backend()
        mldsa_ok = backend.mldsa65_verify(
            self.mldsa_public_bytes, representative, mldsa_signature, COMPOSITE_LABEL
        )
        try:
            self._ed25519.verify(ed25519_signature, representative)
            ed25519_ok = True
        except InvalidSignature:
            ed25519_ok = False
        failed = [name for name, ok in (("ML-DSA-65", mldsa_ok), ("Ed25519", ed25519_ok)) if not ok]
        if failed:
            raise SignatureError(
                f"composite signature does not verify under key {self.fingerprint()[:16]}: "
                f"{' and '.join(failed)} component invalid"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompositeVerifyKey):
            return NotImplemented
        return hmac.compare_digest(self._encoded, other._encoded)

    def __hash__(self) -> int:
        return hash(self._encoded)

    def __repr__(self) -> str:
        return f"CompositeVerifyKey(fingerprint={self.fingerprint()!r})"


@runtime_checkable
class CompositeSigner(Protocol):
    """Anything that produces composite signatures: a software key or a token."""

    def public_key(self) -> CompositeVerifyKey:
        """Return the composite public key matching this signer."""
        ...

    def sign(self, message: bytes, context: bytes = b"") -> bytes:
        """Return a composite signature over ``message`` under ``context``."""
        ...


class CompositeSigningKey:
    """A software composite ML-DSA-65 + Ed25519 private key."""

    __slots__ = ("_backend", "_ed25519", "_mldsa_seed", "_public")

    def __init__(
        self, mldsa_seed: bytes, ed25519_private: bytes, backend: PQCBackend | None = None
    ) -> None:
        """Build a key from a 32-byte ML-DSA-65 seed and a 32-byte Ed25519 key."""
        if len(mldsa_seed) != MLDSA65_SEED_SIZE:
            raise KeyFormatError(f"ML-DSA-65 seed must be {MLDSA65_SEED_SIZE} bytes")
        try:
            self._ed25519 = ed25519.Ed25519PrivateKey.from_private_bytes(ed25519_private)
        except ValueError as exc:
            raise KeyFormatError("Ed25519 private key does not decode") from exc
        self._backend = backend if backend is not None else get_backend()
        self._mldsa_seed = bytes(mldsa_seed)
        self._public = CompositeVerifyKey(
            self._backend.mldsa65_public_key(self._mldsa_seed),
            self._ed25519.public_key().public_bytes_raw(),
            backend,
        )

    @classmethod
    def generate(cls, backend: PQCBackend | None = None) -> CompositeSigningKey:
        """Generate a fresh key pair from the operating system CSPRNG."""
        ed25519_private = ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(secrets.token_bytes(MLDSA65_SEED_SIZE), ed25519_private, backend)

    @classmethod
    def from_private_bytes(
        cls, data: bytes, backend: PQCBackend | None = None
    ) -> CompositeSigningKey:
        """Decode the 64-byte ``mldsa65_seed || ed25519_private`` encoding."""
        if len(data) != PRIVATE_KEY_SIZE:
            raise KeyFormatError(
                f"composite private key must be {PRIVATE_KEY_SIZE} bytes, got {len(data)}"
            )
        return cls(data[:MLDSA65_SEED_SIZE], data[MLDSA65_SEED_SIZE:], backend)

    def private_bytes(self) -> bytes:
        """Return the 64-byte private key encoding. Handle as a secret."""
        return self._mldsa_seed + self._ed25519.private_bytes_raw()

    def public_key(self) -> CompositeVerifyKey:
        """Return the matching composite public key."""
        return self._public

    def sign(self, message: bytes, context: bytes = b"") -> bytes:
        """Return ``mldsa65_sig || ed25519_sig`` over the message representative."""
        representative = composite_message_representative(message, context)
        mldsa_signature = sign_mldsa_component(self._mldsa_seed, representative, self._backend)
        return assemble_composite_signature(mldsa_signature, self._ed25519.sign(representative))

    def __repr__(self) -> str:
        return f"CompositeSigningKey(fingerprint={self._public.fingerprint()!r})"
