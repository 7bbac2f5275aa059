"""Exception types of the key providers.

Every error names what failed, why, and how to fix it. None of them carries key
material, PINs or master secrets in its message.
"""

from __future__ import annotations

from tensorguard.errors import ConfigurationError, ProductionGateError, TensorGuardError


class KeyProviderError(TensorGuardError):
    """Root of every key-provider failure."""


class KeyProviderConfigError(KeyProviderError, ConfigurationError):
    """The provider's configuration (environment variable, path, PIN) is missing or invalid."""


class KeyProviderProductionError(KeyProviderConfigError, ProductionGateError):
    """Production mode refused a key-provider setting (missing secret, throwaway keys)."""


class KeyProviderUnavailable(KeyProviderError):
    """The requested provider cannot work here (not configured, module or service absent)."""


class InvalidKeyNameError(KeyProviderError):
    """A key name does not follow the naming rule."""


class KeyNotFoundError(KeyProviderError):
    """No key of that name and purpose exists in the provider."""


class KeyExistsError(KeyProviderError):
    """A key of that name and purpose already exists; refusing to overwrite it."""


class KeyIntegrityError(KeyProviderError):
    """A stored key could not be authenticated: altered, truncated or misplaced."""


class WrongMasterKeyError(KeyIntegrityError):
    """The master secret differs from the one that sealed the key file."""


class KeyRecordFormatError(KeyIntegrityError):
    """A key file is not a TensorGuard key record, or uses an unsupported version."""


class TokenError(KeyProviderError):
    """A PKCS#11 token operation failed (login, key lookup, sign, encrypt)."""
