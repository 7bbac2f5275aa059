"""A logged-in PKCS#11 session, shared per token within the process.

PKCS#11 login state belongs to the application, not the session: a second ``C_Login``
on the same token fails with ``CKR_USER_ALREADY_LOGGED_IN`` and closing the last
session logs out. So every :class:`TokenSession` on one token in this process shares a
single logged-in session, reference-counted, guarded by one lock (sessions are not
thread-safe). A second opener must present the same PIN; only a salted digest of the
PIN is kept to check that, never the PIN itself.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pkcs11
from pkcs11 import exceptions as p11errors

from tensorguard.keys._closing import Closeable
from tensorguard.keys._errors import KeyProviderConfigError, KeyProviderUnavailable, TokenError

if TYPE_CHECKING:
    from pkcs11._pkcs11 import lib as Pkcs11Library

_PIN_DIGEST_SALT = secrets.token_bytes(16)
_REGISTRY_LOCK = threading.Lock()


@dataclass
class _SharedLogin:
    session: pkcs11.Session
    pin_digest: bytes
    users: int = 0
    lock: threading.RLock = field(default_factory=threading.RLock)


_LOGINS: dict[tuple[str, str], _SharedLogin] = {}


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(_PIN_DIGEST_SALT + pin.encode("utf-8")).digest()


def load_module(module_path: str) -> Pkcs11Library:
    """Load (once per process) the PKCS#11 module at ``module_path``."""
    if not Path(module_path).is_file():
        raise KeyProviderUnavailable(
            f"PKCS#11 module {module_path} does not exist: set TG_PKCS11_MODULE to your "
            "HSM vendor's library (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so from the "
            "Debian package softhsm2)"
        )
    try:
        return pkcs11.lib(module_path)
    except (p11errors.PKCS11Error, RuntimeError, OSError) as exc:
        raise KeyProviderUnavailable(
            f"PKCS#11 module {module_path} could not be loaded or initialised "
            f"({type(exc).__name__}); check that it is the right library for this machine "
            "and, for SoftHSM2, that SOFTHSM2_CONF points at a readable configuration"
        ) from None


def _open_login(module_path: str, token_label: str, pin: str) -> pkcs11.Session:
    library = load_module(module_path)
    try:
        token = library.get_token(token_label=token_label)
    except p11errors.NoSuchToken:
        raise KeyProviderConfigError(
            f"no PKCS#11 token labelled {token_label!r} in module {module_path}: check "
            "TG_PKCS11_TOKEN_LABEL (list tokens with `softhsm2-util --show-slots` or "
            "`pkcs11-tool --module ... --list-token-slots`)"
        ) from None
    except p11errors.MultipleTokensReturned:
        raise KeyProviderConfigError(
            f"several PKCS#11 tokens are labelled {token_label!r}: give each token a "
            "unique label so TG_PKCS11_TOKEN_LABEL selects exactly one"
        ) from None
    try:
        return token.open(rw=True, user_pin=pin)
    except p11errors.PinIncorrect:
        raise KeyProviderConfigError(
            f"the token {token_label!r} rejected the user PIN: set TG_PKCS11_PIN to the "
            "token's user PIN (repeated failures may lock the token)"
        ) from None
    except p11errors.PinLocked:
        raise KeyProviderConfigError(
            f"the user PIN of token {token_label!r} is locked: the security officer must "
            "reset it (softhsm2-util or the HSM's admin tool)"
        ) from None
    except p11errors.PKCS11Error as exc:
        raise TokenError(
            f"could not open a logged-in session on token {token_label!r} ({type(exc).__name__})"
        ) from None


class TokenSession(Closeable):
    """A handle on the process-wide logged-in session of one token."""

    def __init__(self, module_path: str, token_label: str, pin: str) -> None:
        self.module_path = module_path
        self.token_label = token_label
        self._key = (module_path, token_label)
        digest = _pin_digest(pin)
        with _REGISTRY_LOCK:
            shared = _LOGINS.get(self._key)
            if shared is None:
                shared = _SharedLogin(_open_login(module_path, token_label, pin), digest)
                _LOGINS[self._key] = shared
            elif not hmac.compare_digest(shared.pin_digest, digest):
                raise KeyProviderConfigError(
                    f"token {token_label!r} is already logged in in this process with a "
                    "different PIN: every provider in one process must use the same "
                    "TG_PKCS11_PIN"
                )
            shared.users += 1
        self._shared: _SharedLogin | None = shared

    def __repr__(self) -> str:
        state = "open" if self._shared is not None else "closed"
        return f"TokenSession(token={self.token_label!r}, {state})"

    @property
    def session(self) -> pkcs11.Session:
        """The logged-in session; hold :attr:`lock` while using it."""
        return self._require_open().session

    @property
    def lock(self) -> threading.RLock:
        """Serialises use of the shared session across threads."""
        return self._require_open().lock

    @contextmanager
    def operation(self, action: str) -> Iterator[None]:
        """Hold the session lock; report any PKCS#11 failure inside as :class:`TokenError`."""
        with self.lock:
            try:
                yield
            except p11errors.PKCS11Error as exc:
                raise TokenError(
                    f"token {self.token_label!r}: {action} failed ({type(exc).__name__})"
                ) from None

    def _require_open(self) -> _SharedLogin:
        if self._shared is None:
            raise TokenError(f"the session on token {self.token_label!r} is closed")
        return self._shared

    def close(self) -> None:
        """Release this handle; the last one closes the session (and logs out)."""
        with _REGISTRY_LOCK:
            shared, self._shared = self._shared, None
            if shared is None:
                return
            shared.users -= 1
            if shared.users == 0:
                del _LOGINS[self._key]
                with shared.lock:
                    shared.session.close()
