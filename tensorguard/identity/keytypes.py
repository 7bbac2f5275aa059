"""The public-key types the CA issues for, and how a key is named in messages.

Only two leaf key types are accepted: Ed25519 and ECDSA on P-256. Both are supported by
OpenSSL 3, Mosquitto and Python's ``ssl``; RSA and other curves are refused so that the
fleet has one small set of algorithms to audit.
"""

from __future__ import annotations

from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from tensorguard.identity.errors import IdentityConfigError


class KeyType(StrEnum):
    """A leaf key type the issuance policy may allow."""

    ED25519 = "ed25519"
    ECDSA_P256 = "ecdsa-p256"


def key_type_of(public_key: CertificatePublicKeyTypes) -> KeyType | None:
    """The :class:`KeyType` of ``public_key``, or None when it is none of the known types."""
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeyType.ED25519
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(
        public_key.curve, ec.SECP256R1
    ):
        return KeyType.ECDSA_P256
    return None


def describe_key(public_key: CertificatePublicKeyTypes) -> str:
    """A short human name for ``public_key``'s algorithm (for refusal messages)."""
    known = key_type_of(public_key)
    if known is not None:
        return known.value
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return f"ecdsa-{public_key.curve.name}"
    key_size = getattr(public_key, "key_size", None)
    name = type(public_key).__name__.removeprefix("_").removesuffix("PublicKey").lower()
    return f"{name}-{key_size}" if key_size else name


def generate_private_key(
    key_type: KeyType,
) -> ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    """A new private key of ``key_type``."""
    if key_type is KeyType.ED25519:
        return ed25519.Ed25519PrivateKey.generate()
    if key_type is KeyType.ECDSA_P256:
        return ec.generate_private_key(ec.SECP256R1())
    raise IdentityConfigError(f"unknown key type {key_type!r}; use one of {list(KeyType)}")
