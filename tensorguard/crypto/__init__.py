"""TensorGuard's cryptography recipes: safe, standard constructions over primitives.

* :mod:`~tensorguard.crypto.composite` — composite ML-DSA-65 + Ed25519 signatures
  (IETF LAMPS composite signatures draft, ``COMPSIG-MLDSA65-Ed25519-SHA512``);
* :mod:`~tensorguard.crypto.xwing` — X-Wing hybrid KEM (ML-KEM-768 + X25519);
* :mod:`~tensorguard.crypto.key_wrap` — data keys wrapped to X-Wing recipients with
  HKDF-SHA256 bound to a context (package id) and the recipient;
* :mod:`~tensorguard.crypto.stream_aead` — chunked AES-256-GCM with counter and final
  flag in the nonce;
* :mod:`~tensorguard.crypto.backends` — the PQC backend interface (``cryptography``
  by default, ``liboqs`` where installed) and the ``TG_PQC_REQUIRED`` self-test.
"""

from __future__ import annotations

from tensorguard.crypto.backends import (
    PQCBackend,
    PQCRequirementError,
    available_backends,
    enforce_pqc_requirement,
    get_backend,
    require_pqc_backend,
)
from tensorguard.crypto.composite import (
    COMPOSITE_ALGORITHM,
    CompositeSigner,
    CompositeSigningKey,
    CompositeVerifyKey,
    assemble_composite_signature,
    composite_message_representative,
    sign_mldsa_component,
    split_composite_signature,
)
from tensorguard.crypto.errors import (
    AEADDecryptionError,
    BackendUnavailableError,
    CryptoError,
    KEMError,
    KeyFormatError,
    SignatureError,
    StreamFormatError,
    StreamTruncatedError,
)
from tensorguard.crypto.kdf import encode_info, hkdf_sha256
from tensorguard.crypto.key_wrap import WrappedKey, unwrap_key, wrap_key
from tensorguard.crypto.stream_aead import (
    StreamDecryptor,
    StreamEncryptor,
    decrypt_stream,
    encrypt_stream,
)
from tensorguard.crypto.xwing import (
    XWingPrivateKey,
    XWingPublicKey,
    xwing_decapsulate,
    xwing_encapsulate,
    xwing_encapsulate_derand,
)

__all__ = [
    "COMPOSITE_ALGORITHM",
    "AEADDecryptionError",
    "BackendUnavailableError",
    "CompositeSigner",
    "CompositeSigningKey",
    "CompositeVerifyKey",
    "CryptoError",
    "KEMError",
    "KeyFormatError",
    "PQCBackend",
    "PQCRequirementError",
    "SignatureError",
    "StreamDecryptor",
    "StreamEncryptor",
    "StreamFormatError",
    "StreamTruncatedError",
    "WrappedKey",
    "XWingPrivateKey",
    "XWingPublicKey",
    "assemble_composite_signature",
    "available_backends",
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
