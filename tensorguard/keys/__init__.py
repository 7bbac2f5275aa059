"""Key providers: where TensorGuard's private keys and secret blobs live.

* :class:`FileKeyProvider` — AES-256-GCM sealed files under ``TG_KEY_MASTER``;
* :class:`PKCS11KeyProvider` — Ed25519 inside a PKCS#11 token, ML-DSA-65 and other
  secrets wrapped by a token-held AES key;
* :func:`key_provider_from_env` — the provider ``TG_KEY_PROVIDER`` selects
  (``kms`` is refused there with what to use instead: no cloud KMS client is built in).

See ``docs/KEYS.md`` for the environment variables and the threat model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tensorguard.keys._development import development_master
from tensorguard.keys._errors import (
    InvalidKeyNameError,
    KeyExistsError,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProviderConfigError,
    KeyProviderError,
    KeyProviderProductionError,
    KeyProviderUnavailable,
    KeyRecordFormatError,
    TokenError,
    WrongMasterKeyError,
)
from tensorguard.keys._factory import (
    PKCS11_MODULE_ENV,
    PROVIDER_ENV,
    KeyProviderSettings,
    key_provider_from_env,
    state_dir,
)
from tensorguard.keys._file_provider import FileKeyProvider
from tensorguard.keys._master import (
    MASTER_ENV,
    MASTER_HOW_TO,
    MasterSecret,
    master_secret_from_env,
    master_strength_problem,
)
from tensorguard.keys._names import KeyPurpose, validate_key_name
from tensorguard.keys._parties import development_master_file, party_environ, party_key_dir
from tensorguard.keys._provider import KeyInfo, KeyProvider
from tensorguard.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from tensorguard.keys._pkcs11_provider import PKCS11CompositeSigner, PKCS11KeyProvider

# the PKCS#11 provider loads on first use, so python-pkcs11 stays optional
__getattr__ = lazy_exports(
    __name__,
    {"PKCS11CompositeSigner": "._pkcs11_provider", "PKCS11KeyProvider": "._pkcs11_provider"},
    globals(),
)


__all__ = [
    "MASTER_ENV",
    "MASTER_HOW_TO",
    "PKCS11_MODULE_ENV",
    "PROVIDER_ENV",
    "FileKeyProvider",
    "InvalidKeyNameError",
    "KeyExistsError",
    "KeyInfo",
    "KeyIntegrityError",
    "KeyNotFoundError",
    "KeyProvider",
    "KeyProviderConfigError",
    "KeyProviderError",
    "KeyProviderProductionError",
    "KeyProviderSettings",
    "KeyProviderUnavailable",
    "KeyPurpose",
    "KeyRecordFormatError",
    "MasterSecret",
    "PKCS11CompositeSigner",
    "PKCS11KeyProvider",
    "TokenError",
    "WrongMasterKeyError",
    "development_master",
    "development_master_file",
    "key_provider_from_env",
    "master_secret_from_env",
    "master_strength_problem",
    "party_environ",
    "party_key_dir",
    "state_dir",
    "validate_key_name",
]
