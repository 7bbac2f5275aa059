"""X-Wing hybrid KEM: ML-KEM-768 + X25519 with a SHA3-256 combiner.

Follows draft-connolly-cfrg-xwing-kem and is checked against its test vectors:

* private key: a 32-byte seed, expanded with ``SHAKE-256(seed, 96)`` into the ML-KEM-768
  key-generation seed ``d || z`` (bytes 0..63) and the X25519 private key (64..95);
* public key: ``pk_M (1184 bytes) || pk_X (32 bytes)``;
* ciphertext: ``ct_M (1088 bytes) || ct_X (32 bytes)``;
* shared secret: ``SHA3-256(ss_M || ss_X || ct_X || pk_X || XWingLabel)`` with
  ``XWingLabel = "\\.//^\\"`` (the six ASCII bytes ``5c 2e 2f 2f 5e 5c``).

X25519 always comes from ``cryptography``; ML-KEM-768 comes from the selected
:class:`~tensorguard.crypto._backends.PQCBackend`. One deviation from the draft: an
X25519 ciphertext that is a low-order point (all-zero shared value) raises
:class:`~tensorguard.crypto._errors.KEMError` instead of yielding a key, because
``cryptography`` refuses that exchange. Honest peers never produce such a point.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from cryptography.hazmat.primitives.asymmetric import x25519

from tensorguard.crypto._backends import DerandomizedMLKEM, PQCBackend, get_backend
from tensorguard.crypto._backends.base import (
    MLKEM768_CIPHERTEXT_SIZE,
    MLKEM768_ENCAPSULATION_RANDOMNESS_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    MLKEM768_SEED_SIZE,
)
from tensorguard.crypto._errors import BackendUnavailableError, KEMError, KeyFormatError

XWING_LABEL = b"\\.//^\\"
X25519_SIZE = 32
SEED_SIZE = 32
SHARED_SECRET_SIZE = 32
PUBLIC_KEY_SIZE = MLKEM768_PUBLIC_KEY_SIZE + X25519_SIZE
CIPHERTEXT_SIZE = MLKEM768_CIPHERTEXT_SIZE + X25519_SIZE
ENCAPSULATION_SEED_SIZE = MLKEM768_ENCAPSULATION_RANDOMNESS_SIZE + X25519_SIZE


def _combine(
    mlkem_secret: bytes, x25519_secret: bytes, x25519_ciphertext: bytes, x25519_public: bytes
) -> bytes:
    return hashlib.sha3_256(
        mlkem_secret + x25519_secret + x25519_ciphertext + x25519_public + XWING_LABEL
    ).digest()


def _x25519_exchange(private_key: x25519.X25519PrivateKey, peer: bytes) -> bytes:
    try:
        return private_key.exchange(x25519.X25519PublicKey.from_public_bytes(peer))
    except ValueError as exc:
        raise KEMError("X25519 exchange failed: peer value is a low-order point") from exc


class XWingPublicKey:
    """An X-Wing encapsulation key (1216 bytes)."""

    __slots__ = ("_encoded",)

    def __init__(self, encoded: bytes) -> None:
        """Wrap the raw ``pk_M || pk_X`` encoding."""
        if len(encoded) != PUBLIC_KEY_SIZE:
            raise KeyFormatError(
                f"X-Wing public key must be {PUBLIC_KEY_SIZE} bytes, got {len(encoded)}"
            )
        self._encoded = bytes(encoded)

    @classmethod
    def from_public_bytes(cls, data: bytes) -> XWingPublicKey:
        """Decode the raw 1216-byte encoding."""
        return cls(data)

    def public_bytes(self) -> bytes:
        """Return ``pk_M || pk_X``."""
        return self._encoded

    @property
    def mlkem_public_bytes(self) -> bytes:
        """The ML-KEM-768 component encapsulation key."""
        return self._encoded[:MLKEM768_PUBLIC_KEY_SIZE]

    @property
    def x25519_public_bytes(self) -> bytes:
        """The X25519 component public key."""
        return self._encoded[MLKEM768_PUBLIC_KEY_SIZE:]

    def fingerprint(self) -> str:
        """Return the recipient id: lower-case hex SHA-256 of :meth:`public_bytes`."""
        return hashlib.sha256(self._encoded).hexdigest()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, XWingPublicKey):
            return NotImplemented
        return hmac.compare_digest(self._encoded, other._encoded)

    def __hash__(self) -> int:
        return hash(self._encoded)

    def __repr__(self) -> str:
        return f"XWingPublicKey(fingerprint={self.fingerprint()!r})"


class XWingPrivateKey:
    """An X-Wing decapsulation key, stored as its 32-byte seed."""

    __slots__ = ("_backend", "_mlkem_seed", "_public", "_seed", "_x25519")

    def __init__(self, seed: bytes, backend: PQCBackend | None = None) -> None:
        """Expand a 32-byte seed into the component keys."""
        if len(seed) != SEED_SIZE:
            raise KeyFormatError(f"X-Wing seed must be {SEED_SIZE} bytes, got {len(seed)}")
        self._backend = backend if backend is not None else get_backend()
        self._seed = bytes(seed)
        expanded = hashlib.shake_256(self._seed).digest(MLKEM768_SEED_SIZE + X25519_SIZE)
        self._mlkem_seed = expanded[:MLKEM768_SEED_SIZE]
        self._x25519 = x25519.X25519PrivateKey.from_private_bytes(expanded[MLKEM768_SEED_SIZE:])
        self._public = XWingPublicKey(
            self._backend.mlkem768_public_key(self._mlkem_seed)
            + self._x25519.public_key().public_bytes_raw()
        )

    @classmethod
    def generate(cls, backend: PQCBackend | None = None) -> XWingPrivateKey:
        """Generate a fresh key from the operating system CSPRNG."""
        return cls(secrets.token_bytes(SEED_SIZE), backend)

    @classmethod
    def from_seed(cls, seed: bytes, backend: PQCBackend | None = None) -> XWingPrivateKey:
        """Rebuild a key from its 32-byte seed (the draft's private key format)."""
        return cls(seed, backend)

    def private_bytes(self) -> bytes:
        """Return the 32-byte seed. Handle as a secret."""
        return self._seed

    def public_key(self) -> XWingPublicKey:
        """Return the matching encapsulation key."""
        return self._public

    def decapsulate(self, ciphertext: bytes) -> bytes:
        """Return the 32-byte shared secret for ``ciphertext``."""
        if len(ciphertext) != CIPHERTEXT_SIZE:
            raise KEMError(
                f"X-Wing ciphertext must be {CIPHERTEXT_SIZE} bytes, got {len(ciphertext)}"
            )
        mlkem_ciphertext = ciphertext[:MLKEM768_CIPHERTEXT_SIZE]
        x25519_ciphertext = ciphertext[MLKEM768_CIPHERTEXT_SIZE:]
        mlkem_secret = self._backend.mlkem768_decapsulate(self._mlkem_seed, mlkem_ciphertext)
        x25519_secret = _x25519_exchange(self._x25519, x25519_ciphertext)
        return _combine(
            mlkem_secret, x25519_secret, x25519_ciphertext, self._public.x25519_public_bytes
        )

    def __repr__(self) -> str:
        return f"XWingPrivateKey(fingerprint={self._public.fingerprint()!r})"


def _encapsulate_with(
    public_key: XWingPublicKey,
    mlkem_result: tuple[bytes, bytes],
    ephemeral: x25519.X25519PrivateKey,
) -> tuple[bytes, bytes]:
    mlkem_secret, mlkem_ciphertext = mlkem_result
    x25519_ciphertext = ephemeral.public_key().public_bytes_raw()
    x25519_secret = _x25519_exchange(ephemeral, public_key.x25519_public_bytes)
    shared_secret = _combine(
        mlkem_secret, x25519_secret, x25519_ciphertext, public_key.x25519_public_bytes
    )
    return shared_secret, mlkem_ciphertext + x25519_ciphertext


def xwing_encapsulate(
    public_key: XWingPublicKey, backend: PQCBackend | None = None
) -> tuple[bytes, bytes]:
    """Return ``(shared_secret, ciphertext)`` for a fresh encapsulation to ``public_key``."""
    pqc = backend if backend is not None else get_backend()
    return _encapsulate_with(
        public_key,
        pqc.mlkem768_encapsulate(public_key.mlkem_public_bytes),
        x25519.X25519PrivateKey.generate(),
    )


def xwing_encapsulate_derand(
    public_key: XWingPublicKey, eseed: bytes, backend: DerandomizedMLKEM
) -> tuple[bytes, bytes]:
    """Encapsulate with fixed 64-byte randomness (the draft's ``EncapsulateDerand``).

    For known-answer tests only: ``eseed[0:32]`` is the ML-KEM randomness and
    ``eseed[32:64]`` the ephemeral X25519 private key. Reusing ``eseed`` breaks security.
    """
    if not isinstance(backend, DerandomizedMLKEM):
        raise BackendUnavailableError(
            f"{type(backend).__name__} has no derandomised ML-KEM-768 encapsulation; "
            "known-answer tests need a backend with mlkem768_encapsulate_derand"
        )
    if len(eseed) != ENCAPSULATION_SEED_SIZE:
        raise KEMError(f"X-Wing eseed must be {ENCAPSULATION_SEED_SIZE} bytes")
    mlkem_randomness = eseed[:MLKEM768_ENCAPSULATION_RANDOMNESS_SIZE]
    ephemeral = x25519.X25519PrivateKey.from_private_bytes(
        eseed[MLKEM768_ENCAPSULATION_RANDOMNESS_SIZE:]
    )
    return _encapsulate_with(
        public_key,
        backend.mlkem768_encapsulate_derand(public_key.mlkem_public_bytes, mlkem_randomness),
        ephemeral,
    )


def xwing_decapsulate(private_key: XWingPrivateKey, ciphertext: bytes) -> bytes:
    """Return the shared secret for ``ciphertext`` under ``private_key``."""
    return private_key.decapsulate(ciphertext)
