"""Choosing, and proving, the post-quantum backend.

``TG_PQC_BACKEND`` names the backend (``cryptography``, the default, or ``liboqs``).
:func:`require_pqc_backend` runs a real self-test (verify a shipped ML-DSA-65 signature
and, where the backend signs, one of its own; reject forgeries; encapsulate, decapsulate)
and raises when the backend cannot do the work; :func:`enforce_pqc_requirement` applies
it when ``TG_PQC_REQUIRED=true``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
from collections.abc import Mapping
from importlib import resources
from typing import TYPE_CHECKING

from tensorguard.crypto._backends.base import (
    MLDSA65_SEED_SIZE,
    MLKEM768_SEED_SIZE,
    DerandomizedMLKEM,
    PQCBackend,
)
from tensorguard.crypto._backends.pyca import CryptographyBackend
from tensorguard.crypto._errors import BackendUnavailableError, CryptoError, SigningUnsupportedError
from tensorguard.errors import ConfigurationError, ProductionGateError
from tensorguard.lazy_exports import lazy_exports

if TYPE_CHECKING:
    from tensorguard.crypto._backends.liboqs import LibOQSBackend, liboqs_library_path

__all__ = [
    "BACKEND_ENV_VAR",
    "PQC_REQUIRED_ENV_VAR",
    "CryptographyBackend",
    "DerandomizedMLKEM",
    "LibOQSBackend",
    "PQCBackend",
    "PQCRequirementError",
    "available_backends",
    "enforce_pqc_requirement",
    "get_backend",
    "liboqs_library_path",
    "require_pqc_backend",
    "self_test",
]

BACKEND_ENV_VAR = "TG_PQC_BACKEND"
PQC_REQUIRED_ENV_VAR = "TG_PQC_REQUIRED"
DEFAULT_BACKEND = "cryptography"
_SELF_TEST_CONTEXT = b"tensorguard/pqc-self-test"


# The liboqs backend (ctypes, ctypes.util and its subprocess import) loads only when it is
# named: every `tgsp verify` would otherwise pay for it at start-up.
__getattr__ = lazy_exports(
    __name__, {"LibOQSBackend": ".liboqs", "liboqs_library_path": ".liboqs"}, globals()
)


class PQCRequirementError(BackendUnavailableError, ProductionGateError):
    """``TG_PQC_REQUIRED`` is set and no working post-quantum backend is available."""


def _construct(name: str) -> PQCBackend:
    if name == "cryptography":
        return CryptographyBackend()
    if name == "liboqs":
        from tensorguard.crypto._backends.liboqs import LibOQSBackend

        return LibOQSBackend()
    raise ConfigurationError(
        f"{BACKEND_ENV_VAR}={name!r} is not a known PQC backend; "
        "use 'cryptography' (default) or 'liboqs'"
    )


def get_backend(name: str | None = None, environ: Mapping[str, str] | None = None) -> PQCBackend:
    """Return the named backend, or the one ``TG_PQC_BACKEND`` selects (default pyca)."""
    env = os.environ if environ is None else environ
    selected = name or env.get(BACKEND_ENV_VAR, "").strip() or DEFAULT_BACKEND
    return _construct(selected)


def available_backends() -> list[PQCBackend]:
    """Return every backend that can be constructed on this machine."""
    from tensorguard.crypto._backends.liboqs import LibOQSBackend, liboqs_library_path

    backends: list[PQCBackend] = [CryptographyBackend()]
    if liboqs_library_path() is not None:
        # liboqs present but unusable: callers see only working backends
        with contextlib.suppress(BackendUnavailableError):
            backends.append(LibOQSBackend())
    return backends


def _known_answer() -> tuple[bytes, bytes, bytes]:
    """``(public_key, message, signature)``: an ML-DSA-65 signature shipped with TensorGuard
    (``mldsa65_known_answer.json`` beside this module), made under the self-test's context."""
    document = json.loads(
        resources.files(__name__).joinpath("mldsa65_known_answer.json").read_text(encoding="utf-8")
    )
    return (
        base64.b64decode(document["public_key"]),
        document["message"].encode("utf-8"),
        base64.b64decode(document["signature"]),
    )


def _fresh_signature(backend: PQCBackend) -> tuple[bytes, bytes, bytes]:
    """``(public_key, message, signature)`` from a fresh key of ``backend``."""
    signing_seed = secrets.token_bytes(MLDSA65_SEED_SIZE)
    public_key = backend.mldsa65_public_key(signing_seed)
    message = secrets.token_bytes(64)
    return public_key, message, backend.mldsa65_sign(signing_seed, message, _SELF_TEST_CONTEXT)


def _signature_faults(backend: PQCBackend) -> list[str]:
    samples = [_known_answer()]
    # A verify-only backend (liboqs) is judged on the known answer alone.
    with contextlib.suppress(SigningUnsupportedError):
        samples.append(_fresh_signature(backend))
    faults = []
    for public_key, message, signature in samples:
        if not backend.mldsa65_verify(public_key, message, signature, _SELF_TEST_CONTEXT):
            faults.append("a genuine ML-DSA-65 signature did not verify")
        forged_message = backend.mldsa65_verify(
            public_key, message + b"\x00", signature, _SELF_TEST_CONTEXT
        )
        forged_context = backend.mldsa65_verify(public_key, message, signature, b"other")
        if forged_message or forged_context:
            faults.append("ML-DSA-65 accepted a signature over a different message or context")
    return list(dict.fromkeys(faults))


def _kem_faults(backend: PQCBackend) -> list[str]:
    kem_seed = secrets.token_bytes(MLKEM768_SEED_SIZE)
    kem_public = backend.mlkem768_public_key(kem_seed)
    sent_secret, ciphertext = backend.mlkem768_encapsulate(kem_public)
    received_secret = backend.mlkem768_decapsulate(kem_seed, ciphertext)
    stranger_secret = backend.mlkem768_decapsulate(
        secrets.token_bytes(MLKEM768_SEED_SIZE), ciphertext
    )
    faults = []
    if sent_secret != received_secret:
        faults.append("ML-KEM-768 encapsulation and decapsulation disagree")
    if stranger_secret == sent_secret:
        faults.append("ML-KEM-768 released the secret to the wrong key")
    return faults


def self_test(backend: PQCBackend) -> None:
    """Exercise every operation of ``backend``; raise on any fault.

    Checks that a signature verifies, and that the same signature over another message
    or under another context does not: for the ML-DSA-65 signature shipped with
    TensorGuard (a known answer) and, when the backend can sign, for a fresh key of its
    own. A backend that only verifies (liboqs) is judged on the known answer. Then both
    sides of an ML-KEM-768 encapsulation must agree while a different key does not
    recover the secret.
    """
    try:
        faults = _signature_faults(backend) + _kem_faults(backend)
    except CryptoError as exc:
        raise BackendUnavailableError(
            f"PQC backend {backend.name!r} failed its self-test: {exc}"
        ) from exc
    if faults:
        raise BackendUnavailableError(
            f"PQC backend {backend.name!r} failed its self-test: {'; '.join(faults)}"
        )


def require_pqc_backend(
    backend: PQCBackend | None = None, environ: Mapping[str, str] | None = None
) -> PQCBackend:
    """Return a self-tested PQC backend or raise :class:`PQCRequirementError`."""
    try:
        chosen = backend if backend is not None else get_backend(environ=environ)
        self_test(chosen)
    except (CryptoError, ConfigurationError) as exc:
        raise PQCRequirementError(
            f"a working post-quantum backend is required ({PQC_REQUIRED_ENV_VAR}=true) "
            f"but none is available: {exc}. Install cryptography>=48 built against "
            f"OpenSSL 3.5+, or set {BACKEND_ENV_VAR} to a working backend"
        ) from exc
    return chosen


def enforce_pqc_requirement(environ: Mapping[str, str] | None = None) -> PQCBackend | None:
    """Apply ``TG_PQC_REQUIRED``: self-test the backend when it is ``true``.

    Returns the tested backend, or ``None`` when the requirement is off.
    """
    env = os.environ if environ is None else environ
    flag = env.get(PQC_REQUIRED_ENV_VAR, "").strip().lower()
    if flag in ("", "0", "false", "no", "off"):
        return None
    if flag not in ("1", "true", "yes", "on"):
        raise ConfigurationError(
            f"{PQC_REQUIRED_ENV_VAR}={flag!r} is not a boolean; use 'true' or 'false'"
        )
    return require_pqc_backend(environ=env)
