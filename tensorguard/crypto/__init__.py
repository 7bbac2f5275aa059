"""TensorGuard's cryptography recipes: safe, standard constructions over primitives.

* :mod:`~tensorguard.crypto._composite` — composite ML-DSA-65 + Ed25519 signatures
  (IETF LAMPS composite signatures draft, ``COMPSIG-MLDSA65-Ed25519-SHA512``);
* :mod:`~tensorguard.crypto._xwing` — X-Wing hybrid KEM (ML-KEM-768 + X25519);
* :mod:`~tensorguard.crypto._key_wrap` — data keys wrapped to X-Wing recipients with
  HKDF-SHA256 bound to a context (package id) and the recipient;
* :mod:`~tensorguard.crypto._stream_aead` — chunked AES-256-GCM with counter and final
  flag in the nonce;
* :mod:`~tensorguard.crypto._backends` — the PQC backend interface (``cryptography``
  by default, ``liboqs`` where installed) and the ``TG_PQC_REQUIRED`` self-test.
"""

from __future__ import annotations

from tensorguard.crypto._backends import (
    PQCBackend,
    PQCRequirementError,
    available_backends,
    enforce_pqc_requirement,
    get_backend,
    require_pqc_backend,
)
from tensorguard.crypto._backends.base import MLDSA65_SEED_SIZE
from tensorguard.crypto._composite import (
    COMPOSITE_ALGORITHM,
    SIGNATURE_SIZE,
    CompositeSigner,
    CompositeSigningKey,
    CompositeVerifyKey,
    assemble_composite_signature,
    composite_message_representative,
    sign_mldsa_component,
    split_composite_signature,
)
from tensorguard.crypto._errors import (
    AEADDecryptionError,
    BackendUnavailableError,
    CryptoError,
    KEMError,
    KeyFormatError,
    SignatureError,
    SigningUnsupportedError,
    StreamFormatError,
    StreamTruncatedError,
)
from tensorguard.crypto._kdf import encode_info, hkdf_sha256
from tensorguard.crypto._key_wrap import (
    DATA_KEY_SIZE,
    WRAPPED_KEY_SIZE,
    WrappedKey,
    unwrap_key,
    wrap_key,
)
from tensorguard.crypto._stream_aead import (
    TAG_SIZE,
    ChunkCipher,
    StreamDecryptor,
    StreamEncryptor,
    chunk_count,
    ciphertext_length,
    decrypt_stream,
    encrypt_stream,
)
from tensorguard.crypto._xwing import (
    CIPHERTEXT_SIZE,
    XWingPrivateKey,
    XWingPublicKey,
    xwing_decapsulate,
    xwing_encapsulate,
    xwing_encapsulate_derand,
)

__all__ = [
    "CIPHERTEXT_SIZE",
    "COMPOSITE_ALGORITHM",
    "DATA_KEY_SIZE",
    "MLDSA65_SEED_SIZE",
    "SIGNATURE_SIZE",
    "TAG_SIZE",
    "WRAPPED_KEY_SIZE",
    "AEADDecryptionError",
    "BackendUnavailableError",
    "ChunkCipher",
    "CompositeSigner",
    "CompositeSigningKey",
    "CompositeVerifyKey",
    "CryptoError",
    "KEMError",
    "KeyFormatError",
    "PQCBackend",
    "PQCRequirementError",
    "SignatureError",
    "SigningUnsupportedError",
    "StreamDecryptor",
    "StreamEncryptor",
    "StreamFormatError",
    "StreamTruncatedError",
    "WrappedKey",
    "XWingPrivateKey",
    "XWingPublicKey",
    "assemble_composite_signature",
    "available_backends",
    "chunk_count",
    "ciphertext_length",
    "composite_message_representative",
    "decrypt_stream",
    "encode_info",
    "encrypt_stream",
    "enforce_pqc_requirement",
    "get_backend",
    "hkdf_sha256",
    "require_pqc_backend",
    "sign_mldsa_component",
    "split_composite_signature",
    "unwrap_key",
    "wrap_key",
    "xwing_decapsulate",
    "xwing_encapsulate",
    "xwing_encapsulate_derand",
]
