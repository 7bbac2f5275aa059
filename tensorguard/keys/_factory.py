"""Choose and build the key provider from ``TG_*`` environment variables.

=========================  =========================================================
``TG_KEY_PROVIDER``        ``file`` (default) or ``pkcs11``; ``kms`` is refused with
                           :data:`KMS_UNSUPPORTED_MESSAGE` (no cloud KMS client is built in)
``TG_KEY_DIR``             directory of sealed key records (all providers that store
                           files); required in production, development defaults to
                           ``<state>/keys`` (:func:`default_key_dir`)
``TG_KEY_MASTER``          file provider: master secret, at least 32 characters
``TG_ALLOW_EPHEMERAL_KEYS`` development only: allow a throwaway master when
                           ``TG_KEY_MASTER`` is unset
``TG_PKCS11_MODULE``       pkcs11 provider: path of the PKCS#11 library
``TG_PKCS11_TOKEN_LABEL``  pkcs11 provider: label of the token
``TG_PKCS11_PIN``          pkcs11 provider: the token's user PIN (never logged)
``TG_PKCS11_WRAP_KEY_LABEL`` pkcs11 provider: label of the token AES wrapping key
``TG_PKCS11_GCM_IV``      pkcs11 provider: ``auto`` (default: the token's GCM IV when it
                          generates one, else a host IV) or ``token`` (the token's only)
                           (default ``tensorguard-wrap``)
=========================  =========================================================

Every missing setting is reported at once, each with its variable and how to set it.
In production (``TG_ENVIRONMENT=production``) the error is a
:class:`~tensorguard.keys._errors.KeyProviderProductionError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tensorguard.keys._errors import (
    KeyProviderConfigError,
    KeyProviderProductionError,
    KeyProviderUnavailable,
)
from tensorguard.keys._file_provider import FileKeyProvider
from tensorguard.keys._names import DEFAULT_WRAP_KEY_LABEL
from tensorguard.keys._provider import KeyProvider
from tensorguard.production import is_production

PROVIDER_ENV = "TG_KEY_PROVIDER"
KEY_DIR_ENV = "TG_KEY_DIR"
PKCS11_MODULE_ENV = "TG_PKCS11_MODULE"
PKCS11_TOKEN_ENV = "TG_PKCS11_TOKEN_LABEL"  # noqa: S105 - a variable name, not a secret
PKCS11_PIN_ENV = "TG_PKCS11_PIN"
PKCS11_WRAP_KEY_ENV = "TG_PKCS11_WRAP_KEY_LABEL"
PKCS11_GCM_IV_ENV = "TG_PKCS11_GCM_IV"
PROVIDER_KINDS = ("file", "pkcs11")
KMS_UNSUPPORTED_MESSAGE = (
    "TG_KEY_PROVIDER=kms is not supported: TensorGuard ships no AWS/GCP/Azure KMS client, "
    "and no cloud KMS signs composite ML-DSA-65 + Ed25519. Use TG_KEY_PROVIDER=pkcs11 with "
    "your HSM's PKCS#11 library (cloud HSMs such as AWS CloudHSM expose one; the token must "
    "support CKM_EDDSA and AES-GCM), or TG_KEY_PROVIDER=file with TG_KEY_MASTER from your "
    "secret manager. See docs/KEYS.md."
)

_KEY_DIR_HOW_TO = (
    f"set {KEY_DIR_ENV} to a private directory for sealed key records (created 0700), "
    "e.g. /var/lib/tensorguard/keys on a persistent, backed-up volume"
)
_PKCS11_HOW_TO = {
    PKCS11_MODULE_ENV: "set it to the HSM vendor's PKCS#11 library path "
    "(SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)",
    PKCS11_TOKEN_ENV: "set it to the label of the token holding TensorGuard's keys "
    "(see `softhsm2-util --show-slots` or your HSM's tools)",
    PKCS11_PIN_ENV: "set it to the token's user PIN from your secret manager",
}


DEFAULT_STATE_DIR = ".tensorguard"
ARTIFACT_ROOT_ENV = "TG_ARTIFACT_ROOT"


def state_dir(environ: Mapping[str, str]) -> str:
    """The deployment's state directory: the one above ``TG_ARTIFACT_ROOT``
    (default ``.tensorguard``, relative to the working directory)."""
    artifact_root = environ.get(ARTIFACT_ROOT_ENV, f"{DEFAULT_STATE_DIR}/artifacts")
    return os.path.dirname(artifact_root.rstrip("/")) or DEFAULT_STATE_DIR


def default_key_dir(environ: Mapping[str, str]) -> Path:
    """The one development default key directory: ``<state>/keys`` (``.tensorguard/keys``
    unless ``TG_ARTIFACT_ROOT`` moves the state). The pipeline's party vaults are its
    sub-directories ``<state>/keys/<party>`` (:mod:`tensorguard.keys._parties`)."""
    return Path(state_dir(environ)) / "keys"


@dataclass(frozen=True)
class KeyProviderSettings:
    """Validated key-provider settings read from the environment (PIN not in repr)."""

    provider: str
    key_dir: Path
    production: bool
    pkcs11_module: str = ""
    pkcs11_token_label: str = ""
    pkcs11_pin: str = field(default="", repr=False)
    pkcs11_wrap_key_label: str = DEFAULT_WRAP_KEY_LABEL
    pkcs11_gcm_iv: str = "auto"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyProviderSettings:
        """Read and check the settings; raise one error listing every problem."""
        env = os.environ if environ is None else environ
        production = is_production(env)
        provider = env.get(PROVIDER_ENV, "").strip().lower() or "file"
        if provider == "kms":
            raise KeyProviderUnavailable(KMS_UNSUPPORTED_MESSAGE)
        problems: list[str] = []
        if provider not in PROVIDER_KINDS:
            problems.append(
                f"{PROVIDER_ENV}={provider!r} is not a key provider; use one of "
                + ", ".join(PROVIDER_KINDS)
            )
        key_dir_text = env.get(KEY_DIR_ENV, "").strip()
        if not key_dir_text and production:
            problems.append(f"{KEY_DIR_ENV} is not set: {_KEY_DIR_HOW_TO}")
        if provider == "pkcs11":
            problems.extend(
                f"{name} is not set: {how_to}"
                for name, how_to in _PKCS11_HOW_TO.items()
                if not env.get(name, "")
            )
        if problems:
            error = KeyProviderProductionError if production else KeyProviderConfigError
            mode = "TG_ENVIRONMENT=production" if production else "development mode"
            listing = "\n  - ".join(problems)
            raise error(f"key provider settings are incomplete ({mode}):\n  - {listing}")
        return cls(
            provider=provider,
            key_dir=Path(key_dir_text) if key_dir_text else default_key_dir(env),
            production=production,
            pkcs11_module=env.get(PKCS11_MODULE_ENV, ""),
            pkcs11_token_label=env.get(PKCS11_TOKEN_ENV, ""),
            pkcs11_pin=env.get(PKCS11_PIN_ENV, ""),
            pkcs11_wrap_key_label=env.get(PKCS11_WRAP_KEY_ENV, "") or DEFAULT_WRAP_KEY_LABEL,
            pkcs11_gcm_iv=env.get(PKCS11_GCM_IV_ENV, "").strip().lower() or "auto",
        )


def key_provider_from_env(
    environ: Mapping[str, str] | None = None, *, allow_ephemeral: bool | None = None
) -> KeyProvider:
    """Build the provider that ``TG_KEY_PROVIDER`` selects, or raise saying what is missing.

    ``allow_ephemeral`` overrides ``TG_ALLOW_EPHEMERAL_KEYS`` (file provider, development
    only). Callers own the provider: close it (or use it as a context manager).
    """
    settings = KeyProviderSettings.from_env(environ)
    if settings.provider == "pkcs11":
        try:
            from tensorguard.keys._pkcs11_provider import PKCS11KeyProvider
        except ImportError:
            raise KeyProviderUnavailable(
                "TG_KEY_PROVIDER=pkcs11 needs the python-pkcs11 package: "
                "`pip install python-pkcs11==0.10.1`"
            ) from None
        return PKCS11KeyProvider(
            settings.pkcs11_module,
            settings.pkcs11_token_label,
            settings.pkcs11_pin,
            settings.key_dir,
            wrap_key_label=settings.pkcs11_wrap_key_label,
            production=settings.production,
            gcm_iv=settings.pkcs11_gcm_iv,
        )
    return FileKeyProvider.from_env(settings.key_dir, environ, allow_ephemeral=allow_ephemeral)
