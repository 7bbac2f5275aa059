"""PKCS11KeyProvider: the Ed25519 half in the token, the ML-DSA half wrapped by the token.

Composite ML-DSA-65 + Ed25519 keys are split:

* the **Ed25519** key pair is generated inside the token (``CKM_EC_EDWARDS_KEY_PAIR_GEN``,
  curve id-Ed25519) as a sensitive, non-extractable object, and signs the composite
  message representative with ``CKM_EDDSA`` (pure Ed25519, as the composite draft
  requires). No token exposes ML-DSA through PKCS#11 2.40 yet, so the second half
  cannot live there;
* the **ML-DSA-65** seed is sealed in a key record whose AES-256 record key is wrapped
  (``CKM_AES_GCM``, key name and purpose as associated data) by a token-held AES-256 key
  that is sensitive and non-extractable. The seed is decrypted into process memory
  only to build a signer, and never rests in the clear. The record also binds the
  Ed25519 public key, so a record cannot be paired with another token key.

Other secrets (CKKS contexts, X-Wing keys) use the same envelope: large blobs are
encrypted on the host under a fresh data key that only the token can unwrap.

**GCM IVs of the wrapping.** Tokens in FIPS mode generate the AES-GCM IV themselves and
write it back into the ``CK_GCM_PARAMS.pIv`` buffer (caller IVs are refused or ignored).
The provider passes a buffer holding a fresh random IV, records whatever IV the buffer
holds after the call, and marks the record ``wrap_iv_source: token`` when the token
replaced it or ``host`` when the token used the caller's IV (SoftHSM2 and other PKCS#11
2.40 tokens without IV generation: the explicit fallback). Every wrap is checked by
unwrapping it once in the token with the recorded IV. ``TG_PKCS11_GCM_IV=token`` refuses
the host fallback (a token that does not generate IVs then cannot seal keys);
``auto`` (the default) accepts both.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Generator
from itertools import islice
from pathlib import Path
from typing import Any, Literal, cast

import pkcs11
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11errors
from pkcs11.mechanisms import GCMParams
from pkcs11.types import DecryptMixin, EncryptMixin, SignMixin

from tensorguard.codec import StrictModel
from tensorguard.crypto import (
    MLDSA65_SEED_SIZE,
    CompositeSigner,
    CompositeVerifyKey,
    assemble_composite_signature,
    composite_message_representative,
    get_backend,
    sign_mldsa_component,
)
from tensorguard.keys._errors import (
    KeyExistsError,
    KeyIntegrityError,
    KeyNotFoundError,
    KeyProviderConfigError,
    TokenError,
)
from tensorguard.keys._keydir import KeyDirectory
from tensorguard.keys._names import DEFAULT_WRAP_KEY_LABEL, KeyPurpose, validate_key_name
from tensorguard.keys._pkcs11_session import TokenSession
from tensorguard.keys._record import (
    Base64Bytes,
    RecordHeader,
    SealValue,
    b64decode,
    b64encode,
    parse_seal,
)
from tensorguard.keys._sealed import SealedRecordStore
from tensorguard.keys._sealed_provider import SealedKeyProvider
from tensorguard.production import is_production

LOGGER = logging.getLogger(__name__)

SIGNING_LABEL_PREFIX = "tensorguard-sign:"
# DER of the object identifier id-Ed25519 (1.3.101.112, RFC 8410), the CKA_EC_PARAMS
# value PKCS#11 3.0 specifies for Edwards-curve keys.
ED25519_EC_PARAMS = bytes.fromhex("06032b6570")
WRAP_NONCE_BYTES = 12
DATA_KEY_BYTES = 32
_IV_SOURCE_FIELD = "wrap_iv_source"
GCM_IV_POLICIES = ("auto", "token")
"""``TG_PKCS11_GCM_IV``: accept a host-generated IV as fallback (auto) or require the token's."""
_ED25519_ATTRIBUTE = "ed25519_public"


class _PKCS11Seal(StrictModel):
    """The ``seal`` of a record whose data key a token's AES key wrapped (AES-GCM)."""

    wrap_mechanism: Literal["CKM_AES_GCM"]
    token: str
    wrapping_key: str
    wrap_nonce: Base64Bytes
    wrapped_key: Base64Bytes
    wrap_iv_source: Literal["token", "host"] | None = None
    """Absent in records sealed before the IV's source was recorded."""


def check_gcm_iv_policy(value: str) -> str:
    """Return ``value`` if it is a ``TG_PKCS11_GCM_IV`` policy, else raise a config error."""
    if value not in GCM_IV_POLICIES:
        raise KeyProviderConfigError(
            f"TG_PKCS11_GCM_IV={value!r} is not a GCM IV policy; use 'auto' (the token's IV "
            "when it generates one, else a host IV) or 'token' (the token's IV only)"
        )
    return value


def _wrap_context(name: str, purpose: KeyPurpose) -> bytes:
    """Associated data of a wrapped record key: binds it to one key name and purpose."""
    return b"tensorguard/keys/pkcs11/v1\x00" + name.encode("ascii") + b"\x00" + purpose.encode()


def _ed25519_point(encoded: bytes) -> bytes:
    """The 32-byte Ed25519 public key from CKA_EC_POINT (DER OCTET STRING or raw)."""
    if len(encoded) == 34 and encoded[:2] == b"\x04\x20":
        return encoded[2:]
    if len(encoded) == 32:
        return encoded
    raise TokenError(
        f"the token returned a {len(encoded)}-byte CKA_EC_POINT for an Ed25519 key; "
        "expected 32 bytes or a 34-byte DER OCTET STRING"
    )


def _find_keys(session: pkcs11.Session, template: dict[Attribute, Any]) -> list[pkcs11.Key]:
    """Up to two keys matching ``template``; the token search is always finished.

    python-pkcs11's ``get_key`` raises ``MultipleObjectsReturned`` with its search still
    open (the generator is closed only when that exception is freed), and a session runs
    one search at a time: while a caller held the error, every later lookup on the shared
    session failed with ``OperationActive``.
    """
    objects = cast(Generator[pkcs11.Key, None, None], session.get_objects(template))
    try:
        return list(islice(objects, 2))
    finally:
        objects.close()


class TokenWrappedRecordKeys:
    """Record keys wrapped by a token-held AES key (a :class:`RecordKeyManager`)."""

    provider_kind = "pkcs11"

    def __init__(self, token: TokenSession, wrap_key_label: str, gcm_iv: str = "auto") -> None:
        check_gcm_iv_policy(gcm_iv)
        self._token = token
        self._wrap_key_label = wrap_key_label
        self._gcm_iv = gcm_iv

    def __repr__(self) -> str:
        return f"TokenWrappedRecordKeys(token={self._token.token_label!r})"

    def _wrapping_key(self, *, create: bool) -> pkcs11.SecretKey:
        session = self._token.session
        found = _find_keys(
            session,
            {
                Attribute.CLASS: ObjectClass.SECRET_KEY,
                Attribute.KEY_TYPE: KeyType.AES,
                Attribute.LABEL: self._wrap_key_label,
            },
        )
        if len(found) > 1:
            raise TokenError(
                f"token {self._token.token_label!r} holds several AES keys labelled "
                f"{self._wrap_key_label!r}; keep exactly one (destroy the newest)"
            )
        if found:
            if not isinstance(found[0], EncryptMixin) or not isinstance(found[0], DecryptMixin):
                # python-pkcs11 gives such an object no encrypt/decrypt methods at all
                raise TokenError(
                    f"token {self._token.token_label!r} holds an AES key labelled "
                    f"{self._wrap_key_label!r} that does not allow both CKA_ENCRYPT and "
                    "CKA_DECRYPT, so it cannot wrap record keys: set TG_PKCS11_WRAP_KEY_LABEL "
                    "to the key that sealed your records, or to an unused label"
                )
            return cast(pkcs11.SecretKey, found[0])
        if not create:
            raise KeyIntegrityError(
                f"token {self._token.token_label!r} has no wrapping key "
                f"{self._wrap_key_label!r}, so it cannot unwrap keys sealed by another "
                "token: select the token that sealed them with TG_PKCS11_TOKEN_LABEL"
            )
        LOGGER.info(
            "creating AES-256 wrapping key %r in token %r (sensitive, non-extractable)",
            self._wrap_key_label,
            self._token.token_label,
        )
        return session.generate_key(
            KeyType.AES,
            256,
            label=self._wrap_key_label,
            store=True,
            template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
                Attribute.SIGN: False,
                Attribute.VERIFY: False,
            },
        )

    def new_record_key(self, name: str, purpose: KeyPurpose) -> tuple[dict[str, SealValue], bytes]:
        """A fresh data key, encrypted by the token's wrapping key."""
        data_key = secrets.token_bytes(DATA_KEY_BYTES)
        offered = os.urandom(WRAP_NONCE_BYTES)
        iv_buffer = bytearray(offered)  # a token that generates the IV writes it here
        context = _wrap_context(name, purpose)
        with self._token.operation("wrapping a data key with CKM_AES_GCM"):
            wrapping_key = self._wrapping_key(create=True)
            wrapped = cast(
                bytes,
                cast(EncryptMixin, wrapping_key).encrypt(
                    data_key,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(iv_buffer, context, 128),  # type: ignore[arg-type]
                ),
            )
            nonce = bytes(iv_buffer)
            source = "host" if nonce == offered else "token"
            if source == "host" and self._gcm_iv == "token":
                raise TokenError(
                    f"token {self._token.token_label!r} used the caller's GCM IV instead of "
                    "generating one, and TG_PKCS11_GCM_IV=token requires token-generated IVs; "
                    "use a token with IV generation (FIPS mode) or set TG_PKCS11_GCM_IV=auto"
                )
            self._check_unwraps(wrapping_key, wrapped, nonce, context, data_key)
        params: dict[str, SealValue] = {
            "wrap_mechanism": "CKM_AES_GCM",
            "token": self._token.token_label,
            "wrapping_key": self._wrap_key_label,
            "wrap_nonce": b64encode(nonce),
            "wrapped_key": b64encode(wrapped),
            _IV_SOURCE_FIELD: source,
        }
        return params, data_key

    def _check_unwraps(
        self,
        wrapping_key: pkcs11.SecretKey,
        wrapped: bytes,
        nonce: bytes,
        context: bytes,
        data_key: bytes,
    ) -> None:
        """Unwrap once with the recorded IV: a token that generated an IV without
        returning it would otherwise leave a record nobody can open."""
        try:
            recovered = cast(DecryptMixin, wrapping_key).decrypt(
                wrapped,
                mechanism=Mechanism.AES_GCM,
                mechanism_param=GCMParams(nonce, context, 128),
            )
        except p11errors.PKCS11Error as exc:
            raise TokenError(
                f"token {self._token.token_label!r} cannot unwrap a data key it just wrapped "
                f"with the recorded GCM IV ({type(exc).__name__}); its IV handling is not "
                "supported: report the token model"
            ) from None
        if not secrets.compare_digest(cast(bytes, recovered), data_key):
            raise TokenError(
                f"token {self._token.token_label!r} returned a different data key on unwrap"
            )

    def open_record_key(self, header: RecordHeader) -> bytes:
        """Unwrap the record's data key inside the token."""
        seal = parse_seal(_PKCS11Seal, header, self.provider_kind)
        if seal.wrapping_key != self._wrap_key_label:
            raise KeyIntegrityError(
                f"key {header.name!r} was wrapped by token key {seal.wrapping_key!r}, "
                f"but this provider uses {self._wrap_key_label!r}: set "
                "TG_PKCS11_WRAP_KEY_LABEL to the key that sealed it"
            )
        nonce, wrapped = seal.wrap_nonce, seal.wrapped_key
        with self._token.operation("unwrapping a data key"):
            wrapping_key = self._wrapping_key(create=False)
            try:
                data_key = cast(DecryptMixin, wrapping_key).decrypt(
                    wrapped,
                    mechanism=Mechanism.AES_GCM,
                    mechanism_param=GCMParams(
                        nonce, _wrap_context(header.name, header.purpose), 128
                    ),
                )
            except p11errors.PKCS11Error:
                sealed_on = seal.token
                hint = (
                    f" (it was sealed on token {sealed_on!r}, this is {self._token.token_label!r})"
                    if sealed_on != self._token.token_label
                    else ""
                )
                raise KeyIntegrityError(
                    f"token {self._token.token_label!r} could not unwrap the data key of key "
                    f"{header.name!r} ({header.purpose.value}){hint}: the record was altered, "
                    "renamed, or sealed by another token's wrapping key"
                ) from None
        if not isinstance(data_key, bytes) or len(data_key) != DATA_KEY_BYTES:
            raise KeyIntegrityError(f"the unwrapped data key of {header.name!r} has a bad size")
        return data_key


class PKCS11CompositeSigner:
    """A composite signer whose Ed25519 half signs inside the token."""

    def __init__(
        self,
        token: TokenSession,
        ed25519_private: pkcs11.PrivateKey,
        mldsa_seed: bytes,
        verify_key: CompositeVerifyKey,
    ) -> None:
        self._token = token
        self._ed25519_private = ed25519_private
        self._mldsa_seed = mldsa_seed
        self._verify_key = verify_key
        self._ed25519_public = ed25519.Ed25519PublicKey.from_public_bytes(
            verify_key.ed25519_public_bytes
        )

    def __repr__(self) -> str:
        return (
            f"PKCS11CompositeSigner(token={self._token.token_label!r}, "
            f"fingerprint={self._verify_key.fingerprint()!r})"
        )

    def public_key(self) -> CompositeVerifyKey:
        """The composite public key (ML-DSA-65 public key || token Ed25519 public key)."""
        return self._verify_key

    def sign(self, message: bytes, context: bytes = b"") -> bytes:
        """Sign ``M'`` with ML-DSA-65 on the host and Ed25519 in the token."""
        representative = composite_message_representative(message, context)
        mldsa_signature = sign_mldsa_component(self._mldsa_seed, representative)
        with self._token.operation("signing with CKM_EDDSA"):
            ed25519_signature = cast(SignMixin, self._ed25519_private).sign(
                representative, mechanism=Mechanism.EDDSA
            )
        try:
            # A faulty token signature must never leave the process (fault attacks).
            self._ed25519_public.verify(ed25519_signature, representative)
        except InvalidSignature:
            raise TokenError(
                f"token {self._token.token_label!r} produced an Ed25519 signature that does "
                "not verify under its own public key; refusing to release it"
            ) from None
        return assemble_composite_signature(mldsa_signature, ed25519_signature)


class PKCS11KeyProvider(SealedKeyProvider):
    """Keys in (or wrapped by) a PKCS#11 token; sealed records in ``key_dir``."""

    kind = "pkcs11"

    def __init__(
        self,
        module_path: str,
        token_label: str,
        pin: str,
        key_dir: Path | str,
        *,
        wrap_key_label: str = DEFAULT_WRAP_KEY_LABEL,
        production: bool | None = None,
        gcm_iv: str = "auto",
    ) -> None:
        """Log in to ``token_label`` through ``module_path``; records live in ``key_dir``.

        ``gcm_iv`` is the GCM IV policy of the wrapping (module docstring).
        """
        check_gcm_iv_policy(gcm_iv)
        directory = KeyDirectory(key_dir)
        directory.ensure()
        self._token = TokenSession(module_path, token_label, pin)
        wrapper = TokenWrappedRecordKeys(self._token, wrap_key_label, gcm_iv)
        records = SealedRecordStore(directory, wrapper)
        super().__init__(records, production=is_production() if production is None else production)

    def __repr__(self) -> str:
        return (
            f"PKCS11KeyProvider(token={self._token.token_label!r}, "
            f"key_dir={str(self.records.directory.path)!r})"
        )

    def close(self) -> None:
        """Release the token session handle."""
        self._token.close()

    def _ed25519_objects(self, name: str) -> tuple[pkcs11.PublicKey, pkcs11.PrivateKey] | None:
        label = SIGNING_LABEL_PREFIX + name
        session = self._token.session
        found: list[pkcs11.Key] = []
        for object_class in (ObjectClass.PUBLIC_KEY, ObjectClass.PRIVATE_KEY):
            matches = _find_keys(
                session,
                {
                    Attribute.CLASS: object_class,
                    Attribute.KEY_TYPE: KeyType.EC_EDWARDS,
                    Attribute.LABEL: label,
                },
            )
            if len(matches) > 1:
                raise TokenError(
                    f"token {self._token.token_label!r} holds several {object_class.name} "
                    f"objects labelled {label!r}; remove the duplicates"
                )
            found.extend(matches)
        if not found:
            return None
        if len(found) != 2:
            raise TokenError(
                f"token {self._token.token_label!r} holds only half of the Ed25519 key pair "
                f"{label!r}; remove the remaining object and generate the key again"
            )
        return cast(pkcs11.PublicKey, found[0]), cast(pkcs11.PrivateKey, found[1])

    def generate_signing_key(self, name: str) -> CompositeSigner:
        """Generate Ed25519 in the token and an ML-DSA-65 seed sealed by the token."""
        validate_key_name(name)
        self.records.directory.require_absent(name, KeyPurpose.SIGNING)
        label = SIGNING_LABEL_PREFIX + name
        with self._token.operation(
            "generating an Ed25519 key pair (the token must support "
            "CKM_EC_EDWARDS_KEY_PAIR_GEN and CKM_EDDSA)"
        ):
            if self._ed25519_objects(name) is not None:
                raise KeyExistsError(
                    f"token {self._token.token_label!r} already holds an Ed25519 key "
                    f"{label!r} without a sealed ML-DSA record (an interrupted generation?): "
                    "destroy it with the HSM's tools or choose another name"
                )
            public, private = self._token.session.generate_keypair(
                KeyType.EC_EDWARDS,
                mechanism=Mechanism.EC_EDWARDS_KEY_PAIR_GEN,
                store=True,
                label=label,
                public_template={
                    Attribute.EC_PARAMS: ED25519_EC_PARAMS,
                    Attribute.TOKEN: True,
                    Attribute.VERIFY: True,
                },
                private_template={
                    Attribute.TOKEN: True,
                    Attribute.PRIVATE: True,
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.SIGN: True,
                },
            )
            ed25519_public = _ed25519_point(cast(bytes, public[Attribute.EC_POINT]))
        mldsa_seed = secrets.token_bytes(MLDSA65_SEED_SIZE)
        try:
            self.records.seal(
                name,
                KeyPurpose.SIGNING,
                mldsa_seed,
                replace=False,
                attributes={_ED25519_ATTRIBUTE: b64encode(ed25519_public)},
            )
        except BaseException:
            with self._token.operation("removing a half-generated Ed25519 key pair"):
                public.destroy()
                private.destroy()
            raise
        signer = self._build_signer(name, private, ed25519_public, mldsa_seed)
        LOGGER.info(
            "generated composite signing key %r in token %r (fingerprint %s)",
            name,
            self._token.token_label,
            signer.public_key().fingerprint(),
        )
        return signer

    def signer(self, name: str) -> CompositeSigner:
        """Unwrap the ML-DSA seed and pair it with the token's Ed25519 key ``name``."""
        opened = self.records.open_record(name, KeyPurpose.SIGNING)
        with self._token.operation("looking up an Ed25519 key"):
            objects = self._ed25519_objects(name)
            if objects is None:
                raise KeyNotFoundError(
                    f"token {self._token.token_label!r} has no Ed25519 key "
                    f"{SIGNING_LABEL_PREFIX + name!r} for signing key {name!r}: select the "
                    "token that generated it with TG_PKCS11_TOKEN_LABEL"
                )
            public, private = objects
            ed25519_public = _ed25519_point(cast(bytes, public[Attribute.EC_POINT]))
        bound = opened.header.attributes.get(_ED25519_ATTRIBUTE)
        if bound is None or b64decode(bound, _ED25519_ATTRIBUTE) != ed25519_public:
            raise KeyIntegrityError(
                f"the token's Ed25519 key for {name!r} is not the one its ML-DSA record was "
                "sealed with: the token object was replaced; restore the original token"
            )
        return self._build_signer(name, private, ed25519_public, opened.secret)

    def _build_signer(
        self, name: str, private: pkcs11.PrivateKey, ed25519_public: bytes, mldsa_seed: bytes
    ) -> PKCS11CompositeSigner:
        if len(mldsa_seed) != MLDSA65_SEED_SIZE:
            raise KeyIntegrityError(f"the ML-DSA-65 seed of {name!r} has the wrong size")
        verify_key = CompositeVerifyKey(
            get_backend().mldsa65_public_key(mldsa_seed), ed25519_public
        )
        return PKCS11CompositeSigner(self._token, private, mldsa_seed, verify_key)
