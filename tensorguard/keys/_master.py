"""The master secret behind FileKeyProvider (``TG_KEY_MASTER``) and its key derivation.

Rule: ``TG_KEY_MASTER`` must be at least 32 characters (Python ``len`` of the value, used
byte-for-byte as UTF-8, no trimming). It is the only thing between a stolen key
directory and the keys, so it should be random, e.g.
``python -c 'import secrets; print(secrets.token_hex(32))'``.

Production (``TG_ENVIRONMENT=production``) requires at least 256 bits of randomness in
a form that can be checked: the value must be the hex or base64 (standard or URL-safe,
padding optional) encoding of at least 32 bytes, and those bytes must not be repetitive
(at least 16 distinct byte values; 32 random bytes have ~30, a repeated pattern has
few). ``"a" * 32`` (16 bytes as hex), ``"password" * 4`` (24 bytes as base64) and
``"a" * 64`` (32 equal bytes) are refused. :func:`master_strength_problem` states the
rule; the value itself (not its decoding) stays the scrypt input, so records written
under an accepted master remain readable.

Derivation: scrypt (RFC 7914, N=2^15, r=8, p=1, 32-byte output, random 16-byte salt)
turns the master into a key-encryption key (KEK). scrypt rather than HKDF because the
value is operator-supplied and nothing can tell a random 256-bit secret from a 32-letter
passphrase; scrypt makes every offline guess against a stolen key file cost ~32 MiB and
~0.1 s, at the price of one derivation per process and salt (the KEK is cached). Each
record then gets its own AES-256 key from HKDF-SHA256 (RFC 5869) over the KEK with a
fresh 32-byte salt, so no two records share a GCM key and random nonces never collide.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tensorguard.crypto import hkdf_sha256
from tensorguard.keys._errors import KeyProviderConfigError, KeyProviderProductionError
from tensorguard.production import MIN_SECRET_LENGTH, env_flag, is_production

LOGGER = logging.getLogger(__name__)

MASTER_ENV = "TG_KEY_MASTER"
ALLOW_EPHEMERAL_ENV = "TG_ALLOW_EPHEMERAL_KEYS"
MIN_MASTER_LENGTH = MIN_SECRET_LENGTH
KEY_BYTES = 32
_KEY_CHECK_INFO = b"tensorguard/keys/file/v1/key-check"
_RECORD_KEY_INFO = b"tensorguard/keys/file/v1/record-key"
MIN_MASTER_BYTES = 32
MIN_DISTINCT_MASTER_BYTES = 16
MASTER_HOW_TO = (
    f"set {MASTER_ENV} to the hex or base64 encoding of {MIN_MASTER_BYTES} random bytes from "
    "your secret manager, e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`"
)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")


def _decoded_master(value: str) -> bytes | None:
    """The bytes ``value`` encodes as hex (tried first) or base64; None if neither."""
    if _HEX.fullmatch(value):
        return bytes.fromhex(value)
    if not _BASE64.fullmatch(value):
        return None
    unpadded = value.rstrip("=").replace("-", "+").replace("_", "/")
    if len(unpadded) % 4 == 1:
        return None
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error:
        return None


def master_strength_problem(value: str) -> str | None:
    """Why ``value`` is not an acceptable production master, or None when it is.

    The message never contains the value.
    """
    decoded = _decoded_master(value)
    if decoded is None:
        return "is neither hex nor base64, so its randomness cannot be checked"
    if len(decoded) < MIN_MASTER_BYTES:
        return (
            f"encodes {len(decoded)} bytes ({len(decoded) * 8} bits); production needs "
            f"{MIN_MASTER_BYTES} random bytes (256 bits)"
        )
    if len(set(decoded)) < MIN_DISTINCT_MASTER_BYTES:
        return "encodes bytes that repeat a short pattern, not random bytes"
    return None


@dataclass(frozen=True)
class ScryptParameters:
    """Cost parameters of the master-to-KEK derivation; stored in every record."""

    n: int = 2**15
    r: int = 8
    p: int = 1

    def is_within(self, floor: ScryptParameters, ceiling: ScryptParameters) -> bool:
        """True when every cost parameter lies between the floor's and the ceiling's."""
        return (
            floor.n <= self.n <= ceiling.n
            and floor.r <= self.r <= ceiling.r
            and floor.p <= self.p <= ceiling.p
        )


DEFAULT_SCRYPT = ScryptParameters()
# Records may raise the cost up to this (1 GiB of scrypt memory); a tampered header must
# not make a reader allocate more.
MAX_SCRYPT = ScryptParameters(n=2**20, r=8, p=4)


class MasterSecret:
    """The master secret held in memory; its value never appears in repr or messages."""

    __slots__ = ("_kek_cache", "_value", "ephemeral")

    def __init__(self, value: bytes, *, ephemeral: bool = False) -> None:
        self._value = value
        self.ephemeral = ephemeral
        self._kek_cache: dict[tuple[bytes, ScryptParameters], bytes] = {}

    def __repr__(self) -> str:
        kind = "ephemeral" if self.ephemeral else "configured"
        return f"MasterSecret(<redacted>, {kind})"

    @classmethod
    def from_text(cls, value: str, *, production: bool, name: str = MASTER_ENV) -> MasterSecret:
        """Validate the length rule (and, in production, the strength rule of
        :func:`master_strength_problem`); return the secret (UTF-8 bytes of ``value``).
        ``name`` is the variable named in messages."""
        how = MASTER_HOW_TO.replace(MASTER_ENV, name, 1)
        if len(value) < MIN_MASTER_LENGTH:
            error = KeyProviderProductionError if production else KeyProviderConfigError
            raise error(
                f"{name} is shorter than {MIN_MASTER_LENGTH} characters "
                f"(it has {len(value)}): {how}"
            )
        if production:
            problem = master_strength_problem(value)
            if problem is not None:
                raise KeyProviderProductionError(
                    f"{name} {problem}; TG_ENVIRONMENT=production refuses a master that "
                    f"is not demonstrably random: {how}"
                )
        return cls(value.encode("utf-8"))

    @classmethod
    def throwaway(cls) -> MasterSecret:
        """A random master for development only; records sealed under it die with the process."""
        LOGGER.warning(
            "DEVELOPMENT ONLY: %s is not set and %s=true, so keys are sealed under a "
            "THROWAWAY master secret that exists only in this process. Every key written "
            "now becomes unreadable when the process exits. Never use this in production.",
            MASTER_ENV,
            ALLOW_EPHEMERAL_ENV,
        )
        return cls(secrets.token_bytes(KEY_BYTES), ephemeral=True)

    def key_encryption_key(self, salt: bytes, params: ScryptParameters) -> bytes:
        """scrypt(master, salt) under ``params``; cached per (salt, params)."""
        cache_key = (salt, params)
        kek = self._kek_cache.get(cache_key)
        if kek is None:
            kdf = Scrypt(salt=salt, length=KEY_BYTES, n=params.n, r=params.r, p=params.p)
            kek = kdf.derive(self._value)
            self._kek_cache[cache_key] = kek
        return kek


def key_check_value(kek: bytes) -> bytes:
    """A 16-byte value that tells a wrong master apart from a tampered record."""
    return hkdf_sha256(kek, salt=b"", info=_KEY_CHECK_INFO, length=16)


def key_check_matches(kek: bytes, expected: bytes) -> bool:
    """Constant-time comparison of the key check value."""
    return hmac.compare_digest(key_check_value(kek), expected)


def record_key(kek: bytes, record_salt: bytes) -> bytes:
    """The AES-256 key of one record: HKDF-SHA256(KEK, salt=record_salt)."""
    return hkdf_sha256(kek, salt=record_salt, info=_RECORD_KEY_INFO, length=KEY_BYTES)


def master_secret_from_env(
    environ: Mapping[str, str] | None = None, *, allow_ephemeral: bool | None = None
) -> MasterSecret:
    """Read ``TG_KEY_MASTER``, applying the production rules.

    Production: missing or short is refused, and throwaway masters are never used.
    Development: missing is refused unless ``allow_ephemeral`` (default: the
    ``TG_ALLOW_EPHEMERAL_KEYS`` flag) permits a throwaway master, which is logged loudly.
    """
    env = os.environ if environ is None else environ
    production = is_production(env)
    ephemeral_allowed = (
        env_flag(ALLOW_EPHEMERAL_ENV, env) if allow_ephemeral is None else allow_ephemeral
    )
    value = env.get(MASTER_ENV, "")
    if value:
        return MasterSecret.from_text(value, production=production)
    if production:
        refusal = " (throwaway keys are never used in production)" if ephemeral_allowed else ""
        raise KeyProviderProductionError(
            f"TG_ENVIRONMENT=production requires {MASTER_ENV} for the file key provider"
            f"{refusal}: {MASTER_HOW_TO}"
        )
    if not ephemeral_allowed:
        raise KeyProviderConfigError(
            f"{MASTER_ENV} is not set: {MASTER_HOW_TO}; for throwaway development keys set "
            f"{ALLOW_EPHEMERAL_ENV}=true instead"
        )
    return MasterSecret.throwaway()
