"""Key names and purposes: what a stored key is called and what it may be used for."""

from __future__ import annotations

import re
from enum import StrEnum

from tensorguard.keys._errors import InvalidKeyNameError

KEY_NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")
DEFAULT_WRAP_KEY_LABEL = "tensorguard-wrap"
"""Label of the token AES key that wraps PKCS#11 records (``TG_PKCS11_WRAP_KEY_LABEL``)."""


class KeyPurpose(StrEnum):
    """What a stored secret is for; bound into its encryption so records cannot be swapped.

    ``SIGNING`` records are managed by the providers themselves (``generate_signing_key``)
    and are never handed out as raw bytes.
    """

    SIGNING = "composite-signing"
    KEM = "xwing-kem"
    CKKS_SECRET = "ckks-secret-context"  # noqa: S105 - a purpose label, not a password
    GENERIC = "generic-secret"


def validate_key_name(name: str) -> str:
    """Return ``name`` if it is a valid key name, else raise :class:`InvalidKeyNameError`.

    A key name is 1–63 characters of lowercase ASCII letters, digits, ``_``, ``.`` and
    ``-``, starting with a letter or digit. Lowercase only, so names cannot collide on
    case-insensitive file systems; the first-character rule rules out ``.`` and ``..``.
    """
    if not isinstance(name, str) or KEY_NAME_PATTERN.fullmatch(name) is None:
        raise InvalidKeyNameError(
            f"invalid key name {name!r}: use 1-63 characters of a-z, 0-9, '_', '.', '-', "
            "starting with a letter or digit (e.g. 'release-signer')"
        )
    return name
