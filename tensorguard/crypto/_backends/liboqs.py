"""PQC backend on liboqs through ``liboqs-python``, used only where liboqs is installed.

Loading is done in two steps, and the second runs only if the first succeeds:

1. :func:`load_liboqs_library` opens the liboqs shared library itself with
   :class:`ctypes.CDLL` (the path in ``TG_LIBOQS_PATH``, else ``liboqs.so`` through the
   dynamic loader's own search) and checks that it exports liboqs' entry points. This
   spawns no process: no ``ldconfig``, ``gcc`` or ``ld`` as
   :func:`ctypes.util.find_library` would.
2. Only then is ``oqs`` imported, under :func:`_guarded_oqs_import`: liboqs-python's
   own library search is pointed at the library already loaded, and an audit hook refuses
   every process it would start (its fallback downloads liboqs with ``git clone`` and
   builds it, then calls ``sys.exit``). ``SystemExit``, ``RuntimeError`` and any other
   failure of that import become :class:`~tensorguard.crypto._errors.BackendUnavailableError`.

liboqs-python has no switch that turns its download off, hence the guard.

liboqs-python derives ML-KEM-768 keys from a seed (``generate_keypair_seed``) but has
no seed-based ML-DSA key generation, while our key format stores ML-DSA-65 keys as
their 32-byte FIPS 204 seed. This backend therefore verifies ML-DSA-65 signatures and
performs every ML-KEM-768 operation, and refuses ML-DSA-65 signing with a
:class:`~tensorguard.crypto._errors.BackendUnavailableError` that names the fix.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from tensorguard.crypto._backends.base import (
    MLKEM768_CIPHERTEXT_SIZE,
    MLKEM768_PUBLIC_KEY_SIZE,
    MLKEM768_SEED_SIZE,
)
from tensorguard.crypto._errors import (
    BackendUnavailableError,
    KEMError,
    KeyFormatError,
    SigningUnsupportedError,
)

MLDSA65_NAME = "ML-DSA-65"
MLKEM768_NAME = "ML-KEM-768"
LIBOQS_PATH_ENV_VAR = "TG_LIBOQS_PATH"
# Names the dynamic loader resolves itself (LD_LIBRARY_PATH, ld.so.cache, system dirs).
_DEFAULT_LIBRARY_NAMES = ("liboqs.so", "liboqs.dylib", "oqs.dll")
# Entry points every liboqs release exports; a file without them is not liboqs.
_REQUIRED_SYMBOLS = ("OQS_init", "OQS_version", "OQS_SIG_new", "OQS_KEM_new")
# Audit events that start a process (liboqs-python's download uses subprocess or os.system).
_PROCESS_EVENTS = frozenset(
    {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork"}
)
_INSTALL_REMEDY = (
    "install liboqs (https://github.com/open-quantum-safe/liboqs) as a shared library, "
    f"point {LIBOQS_PATH_ENV_VAR} at it, or use the default backend "
    "(TG_PQC_BACKEND=cryptography)"
)

_import_lock = threading.Lock()
_guard_state = {"active": False, "hook_installed": False}


class _ProcessRefused(RuntimeError):
    """Raised by the audit hook when liboqs-python tries to start a process."""


def _candidate_libraries(environ: Mapping[str, str]) -> tuple[str, ...]:
    explicit = environ.get(LIBOQS_PATH_ENV_VAR, "").strip()
    if explicit:
        return (explicit,)
    return _DEFAULT_LIBRARY_NAMES


def load_liboqs_library(environ: Mapping[str, str] | None = None) -> tuple[str, ctypes.CDLL]:
    """Open the liboqs shared library with :class:`ctypes.CDLL`; return ``(name, handle)``.

    Raises :class:`BackendUnavailableError` that says what the loader reported when no
    candidate loads or a loaded file lacks liboqs' entry points. Starts no process.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    for name in _candidate_libraries(env):
        try:
            library = ctypes.CDLL(name)
        except OSError as exc:
            problems.append(str(exc))
            continue
        missing = [symbol for symbol in _REQUIRED_SYMBOLS if not hasattr(library, symbol)]
        if missing:
            problems.append(f"{name} loads but is not liboqs (no {', '.join(missing)})")
            continue
        return name, library
    found = [p for p in problems if "cannot open shared object file" not in p]
    if not found:
        raise BackendUnavailableError(
            f"liboqs backend unavailable: the liboqs shared library is not installed; "
            f"{_INSTALL_REMEDY}"
        )
    raise BackendUnavailableError(
        f"liboqs backend unavailable: a liboqs library was found but cannot be used "
        f"({'; '.join(found)}); {_INSTALL_REMEDY}"
    )


def liboqs_library_path(environ: Mapping[str, str] | None = None) -> str | None:
    """Return the name or path of a loadable liboqs library, or ``None``; starts no process."""
    try:
        name, _ = load_liboqs_library(environ)
    except BackendUnavailableError:
        return None
    return name


# Not mutated by `make mutation`: once installed, Python calls this hook for every audit
# event in mutmut's own process too, where a mutant trampoline breaks its setup check;
# its hand-made mutants are killed by tests/crypto (docs/SECURITY.md §4).
def _refuse_processes(event: str, args: tuple[object, ...]) -> None:  # pragma: no mutate block
    del args
    if _guard_state["active"] and event in _PROCESS_EVENTS:
        raise _ProcessRefused(
            f"liboqs-python tried to start a process ({event}) while being imported"
        )


def _warnings_and_above(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING


@contextlib.contextmanager
def _guarded_oqs_import(library: str) -> Iterator[None]:
    """Import ``oqs`` against ``library``, with no process and no download allowed."""
    original_find_library = ctypes.util.find_library

    def find_loaded_library(name: str) -> str | None:
        if name in ("oqs", "liboqs"):
            return library
        return original_find_library(name)

    with _import_lock:
        if not _guard_state["hook_installed"]:
            sys.addaudithook(_refuse_processes)
            # liboqs-python logs INFO lines to stdout at import; keep the CLI's stdout clean
            logging.getLogger("oqs.oqs").addFilter(_warnings_and_above)
            _guard_state["hook_installed"] = True
        ctypes.util.find_library = find_loaded_library
        _guard_state["active"] = True
        try:
            yield
        finally:
            _guard_state["active"] = False
            ctypes.util.find_library = original_find_library


def _load_oqs_module(environ: Mapping[str, str] | None = None) -> Any:
    library, _ = load_liboqs_library(environ)
    try:
        with _guarded_oqs_import(library):
            import oqs  # deferred and guarded: see the module docstring
    except ImportError as exc:
        if exc.name != "oqs":
            raise BackendUnavailableError(
                f"liboqs backend unavailable: liboqs-python failed to import ({exc}); "
                "reinstall it with `pip install 'tensorguard[oqs]'`"
            ) from exc
        raise BackendUnavailableError(
            "liboqs backend unavailable: liboqs is installed but the 'liboqs-python' "
            "package is not; run `pip install 'tensorguard[oqs]'`"
        ) from exc
    except (SystemExit, Exception) as exc:  # liboqs-python exits or raises on a bad library
        raise BackendUnavailableError(
            f"liboqs backend unavailable: liboqs-python could not use the liboqs library "
            f"{library!r} ({type(exc).__name__}: {exc}); {_INSTALL_REMEDY}"
        ) from exc
    return oqs


class LibOQSBackend:
    """ML-DSA-65 verification and ML-KEM-768 from liboqs."""

    def __init__(self) -> None:
        """Load liboqs; raise :class:`BackendUnavailableError` if it is missing."""
        self._oqs = _load_oqs_module()
        enabled_sigs = set(self._oqs.get_enabled_sig_mechanisms())
        enabled_kems = set(self._oqs.get_enabled_kem_mechanisms())
        missing = [
            name
            for name, enabled in ((MLDSA65_NAME, enabled_sigs), (MLKEM768_NAME, enabled_kems))
            if name not in enabled
        ]
        if missing:
            raise BackendUnavailableError(
                f"liboqs backend unavailable: this liboqs build does not enable {missing}; "
                "rebuild liboqs with ML-DSA and ML-KEM enabled"
            )

    @property
    def name(self) -> str:
        """Backend name used in configuration and diagnostics."""
        return "liboqs"

    def mldsa65_public_key(self, seed: bytes) -> bytes:
        """Refused: liboqs-python cannot expand an ML-DSA-65 seed."""
        del seed
        raise self._no_seeded_mldsa()

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        """Refused: liboqs-python cannot expand an ML-DSA-65 seed."""
        del seed, message, context
        raise self._no_seeded_mldsa()

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        """Return whether an ML-DSA-65 signature (with context string) is valid."""
        with self._oqs.Signature(MLDSA65_NAME) as verifier:
            if len(public_key) != verifier.length_public_key:
                raise KeyFormatError("ML-DSA-65 public key has the wrong length")
            return bool(verifier.verify_with_ctx_str(message, signature, context, public_key))

    def mlkem768_public_key(self, seed: bytes) -> bytes:
        """Return the ML-KEM-768 encapsulation key for a 64-byte seed."""
        with self._seeded_kem(seed) as (_, public_key):
            return public_key

    def mlkem768_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        """Encapsulate to an ML-KEM-768 public key; returns ``(secret, ciphertext)``."""
        if len(public_key) != MLKEM768_PUBLIC_KEY_SIZE:
            raise KeyFormatError("ML-KEM-768 public key has the wrong length")
        with self._oqs.KeyEncapsulation(MLKEM768_NAME) as kem:
            ciphertext, shared_secret = kem.encap_secret(public_key)
        return bytes(shared_secret), bytes(ciphertext)

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        """Decapsulate an ML-KEM-768 ciphertext under the key derived from ``seed``."""
        if len(ciphertext) != MLKEM768_CIPHERTEXT_SIZE:
            raise KEMError("ML-KEM-768 ciphertext has the wrong length")
        with self._seeded_kem(seed) as (kem, _):
            return bytes(kem.decap_secret(ciphertext))

    def _seeded_kem(self, seed: bytes) -> _SeededKEM:
        if len(seed) != MLKEM768_SEED_SIZE:
            raise KeyFormatError(f"ML-KEM-768 seed must be {MLKEM768_SEED_SIZE} bytes")
        kem = self._oqs.KeyEncapsulation(MLKEM768_NAME)
        if not hasattr(kem, "generate_keypair_seed"):
            kem.free()
            raise BackendUnavailableError(
                "liboqs backend cannot derive ML-KEM-768 keys from a seed: upgrade "
                "liboqs-python to a release with KeyEncapsulation.generate_keypair_seed"
            )
        return _SeededKEM(kem, seed)

    @staticmethod
    def _no_seeded_mldsa() -> SigningUnsupportedError:
        return SigningUnsupportedError(
            "liboqs backend cannot sign: liboqs-python has no seed-based ML-DSA-65 key "
            "generation and TensorGuard keys are stored as FIPS 204 seeds; sign with the "
            "'cryptography' backend (TG_PQC_BACKEND=cryptography)"
        )


class _SeededKEM:
    """Context manager holding a liboqs KEM object keyed from a seed."""

    def __init__(self, kem: Any, seed: bytes) -> None:
        self._kem = kem
        self._seed = seed

    def __enter__(self) -> tuple[Any, bytes]:
        public_key = bytes(self._kem.generate_keypair_seed(self._seed))
        return self._kem, public_key

    def __exit__(self, *exc_info: object) -> None:
        self._kem.free()
