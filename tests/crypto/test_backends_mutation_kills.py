"""The PQC backends' refusals, word for word, and the liboqs backend's glue (#18 item 6).

The mutation run on ``crypto/_backends`` found these unchecked: every size refusal of
the default backend, the liboqs loader's search order and messages, the guarded import's
redirection of liboqs-python's own library search, and everything ``LibOQSBackend`` does
once ``oqs`` is imported (no liboqs is installed on the machines that run the suite).

liboqs itself is stood in for by a compiled stub that exports its entry points, and
liboqs-python by a small ``oqs`` package with liboqs-python's API (``Signature``,
``KeyEncapsulation`` with ``generate_keypair_seed``, ``verify_with_ctx_str``,
``encap_secret`` returning ``(ciphertext, shared_secret)``, ``free``) computed with the
real FIPS 203/204 implementations of ``cryptography``. The tests therefore check the
backend's own work (sizes, argument order, seeds, freeing) against the default backend,
not liboqs' arithmetic.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tensorguard.crypto._backends import liboqs as liboqs_module
from tensorguard.crypto._backends.liboqs import (
    LIBOQS_PATH_ENV_VAR,
    LibOQSBackend,
    _load_oqs_module,
    liboqs_library_path,
    load_liboqs_library,
)
from tensorguard.crypto._backends.pyca import CryptographyBackend
from tensorguard.crypto._errors import BackendUnavailableError, KEMError, KeyFormatError

STUB_SOURCE = """
int OQS_init(void) { return 0; }
const char *OQS_version(void) { return "0.0.0-stub"; }
void *OQS_SIG_new(const char *name) { (void)name; return 0; }
void *OQS_KEM_new(const char *name) { (void)name; return 0; }
"""
REMEDY = (
    "install liboqs (https://github.com/open-quantum-safe/liboqs) as a shared library, "
    "point TG_LIBOQS_PATH at it, or use the default backend (TG_PQC_BACKEND=cryptography)"
)
NOT_LIBOQS = "loads but is not liboqs (no OQS_init, OQS_version, OQS_SIG_new, OQS_KEM_new)"

# liboqs-python's API, computed by cryptography's ML-DSA-65 and ML-KEM-768.
STAND_IN_OQS = """
import ctypes.util
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa, mlkem

ENABLED_SIGS = {sigs!r}
ENABLED_KEMS = {kems!r}
SEEDED = {seeded!r}
FOUND = (ctypes.util.find_library("oqs"), ctypes.util.find_library("liboqs"))
LIVE = []


class MechanismNotSupportedError(Exception):
    pass


def get_enabled_sig_mechanisms():
    return tuple(ENABLED_SIGS)


def get_enabled_kem_mechanisms():
    return tuple(ENABLED_KEMS)


class _Native:
    def __init__(self, name, enabled):
        if name not in enabled:
            raise MechanismNotSupportedError(name)
        self.alg_name = name
        LIVE.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.free()

    def free(self):
        LIVE.remove(self)


class Signature(_Native):
    length_public_key = 1952

    def __init__(self, name):
        super().__init__(name, ENABLED_SIGS)

    def verify_with_ctx_str(self, message, signature, context, public_key):
        key = mldsa.MLDSA65PublicKey.from_public_bytes(bytes(public_key))
        try:
            key.verify(bytes(signature), bytes(message), bytes(context))
        except InvalidSignature:
            return False
        return True


class KeyEncapsulation(_Native):
    def __init__(self, name):
        super().__init__(name, ENABLED_KEMS)
        self._private = None

    def encap_secret(self, public_key):
        key = mlkem.MLKEM768PublicKey.from_public_bytes(bytes(public_key))
        shared_secret, ciphertext = key.encapsulate()
        return bytearray(ciphertext), bytearray(shared_secret)

    def decap_secret(self, ciphertext):
        return bytearray(self._private.decapsulate(bytes(ciphertext)))


def _generate_keypair_seed(self, seed):
    if len(seed) != 64:
        raise ValueError(f"Seed length must be 64 bytes, got {{len(seed)}} bytes")
    self._private = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(seed))
    return bytearray(self._private.public_key().public_bytes_raw())


if SEEDED:
    KeyEncapsulation.generate_keypair_seed = _generate_keypair_seed
"""


def stand_in(
    sigs: tuple[str, ...] = ("ML-DSA-65",),
    kems: tuple[str, ...] = ("ML-KEM-768",),
    seeded: bool = True,
) -> str:
    """The stand-in ``oqs`` package's source, with these mechanisms enabled."""
    return STAND_IN_OQS.format(sigs=list(sigs), kems=list(kems), seeded=seeded)


@pytest.fixture(scope="module")
def stub_liboqs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loadable shared library that exports liboqs' entry points."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the stub library")
    root = tmp_path_factory.mktemp("stub-liboqs-kills")
    (root / "stub.c").write_text(STUB_SOURCE)
    library = root / "liboqs.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-o", str(library), str(root / "stub.c")], check=True
    )
    return library


@pytest.fixture
def not_a_library(tmp_path: Path) -> Path:
    """A file the loader finds but cannot load."""
    path = tmp_path / "broken" / "liboqs.so"
    path.parent.mkdir()
    path.write_bytes(b"\x7fELF but not really a shared object\n" * 4)
    return path


@pytest.fixture
def oqs_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stub_liboqs: Path
) -> Iterator[Callable[[str], None]]:
    """Install an ``oqs`` package with the given source; liboqs is the stub library,
    named by ``TG_LIBOQS_PATH``."""
    monkeypatch.setenv(LIBOQS_PATH_ENV_VAR, str(stub_liboqs))
    monkeypatch.delitem(sys.modules, "oqs", raising=False)
    count = iter(range(1000))

    def install(source: str) -> None:
        package = tmp_path / f"site-{next(count)}" / "oqs"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(source)
        sys.modules.pop("oqs", None)
        monkeypatch.syspath_prepend(str(package.parent))

    yield install
    sys.modules.pop("oqs", None)


def _live(backend: LibOQSBackend) -> list[Any]:
    """The stand-in's liboqs objects that were created and not freed."""
    oqs: ModuleType = backend._oqs
    live: list[Any] = oqs.LIVE
    return live


# --- the default backend's refusals -------------------------------------------------


def test_the_default_backend_names_every_size_it_refuses() -> None:
    backend = CryptographyBackend()
    cases: list[tuple[Callable[[], object], type[Exception], str]] = [
        (
            lambda: backend.mldsa65_public_key(bytes(31)),
            KeyFormatError,
            "ML-DSA-65 seed must be 32 bytes, got 31",
        ),
        (
            lambda: backend.mldsa65_sign(bytes(33), b"m", b""),
            KeyFormatError,
            "ML-DSA-65 seed must be 32 bytes, got 33",
        ),
        (
            lambda: backend.mlkem768_public_key(bytes(63)),
            KeyFormatError,
            "ML-KEM-768 seed must be 64 bytes, got 63",
        ),
        (
            lambda: backend.mlkem768_decapsulate(bytes(32), bytes(1088)),
            KeyFormatError,
            "ML-KEM-768 seed must be 64 bytes, got 32",
        ),
        (
            lambda: backend.mlkem768_encapsulate(bytes(1183)),
            KeyFormatError,
            "ML-KEM-768 public key must be 1184 bytes, got 1183",
        ),
        (
            lambda: backend.mlkem768_decapsulate(bytes(64), bytes(1089)),
            KEMError,
            "ML-KEM-768 ciphertext must be 1088 bytes, got 1089",
        ),
        (
            # every coefficient 4095, above q = 3329: FIPS 203's modulus check fails
            lambda: backend.mlkem768_encapsulate(b"\xff" * 1184),
            KeyFormatError,
            "ML-KEM-768 public key does not decode",
        ),
        (
            lambda: backend.mldsa65_verify(bytes(10), b"m", bytes(3309), b""),
            KeyFormatError,
            "ML-DSA-65 public key does not decode",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as caught:
            call()
        assert type(caught.value) is error
        assert str(caught.value) == message


# --- finding and loading the liboqs library ------------------------------------------


def _os_error(path: Path | str) -> str:
    try:
        ctypes.CDLL(str(path))
    except OSError as exc:
        return str(exc)
    raise AssertionError(f"{path} loaded")


def test_the_default_search_goes_past_a_missing_and_a_foreign_library(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stub_liboqs: Path
) -> None:
    """Without ``TG_LIBOQS_PATH`` each default name is tried in order: a library that
    is not liboqs and a name that does not load are passed over, the next one is used."""
    if sys.platform != "linux":
        pytest.skip("uses glibc's libc.so.6 as the foreign library")
    names = ("libc.so.6", str(tmp_path / "absent" / "liboqs.so"), str(stub_liboqs))
    monkeypatch.setattr(liboqs_module, "_DEFAULT_LIBRARY_NAMES", names)
    name, library = load_liboqs_library({})
    assert name == str(stub_liboqs)
    assert library.OQS_init() == 0
    # a blank TG_LIBOQS_PATH is the same as none
    assert load_liboqs_library({LIBOQS_PATH_ENV_VAR: "  "})[0] == str(stub_liboqs)


def test_every_unusable_library_is_named_in_the_refusal(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, not_a_library: Path
) -> None:
    if sys.platform != "linux":
        pytest.skip("uses glibc's libc.so.6 as the foreign library")
    absent = tmp_path / "absent" / "liboqs.so"
    monkeypatch.setattr(
        liboqs_module, "_DEFAULT_LIBRARY_NAMES", ("libc.so.6", str(absent), str(not_a_library))
    )
    with pytest.raises(BackendUnavailableError) as caught:
        load_liboqs_library({})
    assert str(caught.value) == (
        "liboqs backend unavailable: a liboqs library was found but cannot be used "
        f"(libc.so.6 {NOT_LIBOQS}; {_os_error(not_a_library)}); {REMEDY}"
    )
    monkeypatch.setattr(liboqs_module, "_DEFAULT_LIBRARY_NAMES", (str(absent),))
    with pytest.raises(BackendUnavailableError) as caught:
        load_liboqs_library({})
    assert str(caught.value) == (
        f"liboqs backend unavailable: the liboqs shared library is not installed; {REMEDY}"
    )


def test_the_library_path_lookup_reads_the_environment_it_is_given(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, stub_liboqs: Path
) -> None:
    monkeypatch.delenv(LIBOQS_PATH_ENV_VAR, raising=False)
    monkeypatch.setattr(liboqs_module, "_DEFAULT_LIBRARY_NAMES", (str(tmp_path / "none.so"),))
    assert liboqs_library_path({LIBOQS_PATH_ENV_VAR: str(stub_liboqs)}) == str(stub_liboqs)
    assert liboqs_library_path({}) is None


# --- importing liboqs-python under the guard -----------------------------------------


def test_liboqs_python_is_pointed_at_the_library_already_loaded(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    stub_liboqs: Path,
    oqs_package: Callable[[str], None],
) -> None:
    """liboqs-python's ``find_library("oqs")`` answers the library the loader opened,
    from the environment the caller passed (not the process's)."""
    oqs_package(stand_in())
    monkeypatch.delenv(LIBOQS_PATH_ENV_VAR)
    monkeypatch.setattr(liboqs_module, "_DEFAULT_LIBRARY_NAMES", (str(tmp_path / "none.so"),))
    oqs = _load_oqs_module({LIBOQS_PATH_ENV_VAR: str(stub_liboqs)})
    found = oqs.FOUND
    assert found == (str(stub_liboqs), str(stub_liboqs))
    assert ctypes.util.find_library.__module__ == "ctypes.util", "the original is restored"


def test_a_missing_liboqs_python_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, stub_liboqs: Path
) -> None:
    monkeypatch.setitem(sys.modules, "oqs", None)  # `import oqs` fails as if not installed
    with pytest.raises(BackendUnavailableError) as caught:
        _load_oqs_module({LIBOQS_PATH_ENV_VAR: str(stub_liboqs)})
    assert str(caught.value) == (
        "liboqs backend unavailable: liboqs is installed but the 'liboqs-python' "
        "package is not; run `pip install 'tensorguard[oqs]'`"
    )


def test_a_broken_liboqs_python_says_to_reinstall_it(
    oqs_package: Callable[[str], None], stub_liboqs: Path
) -> None:
    oqs_package("import oqs_missing_dependency\n")
    with pytest.raises(BackendUnavailableError) as caught:
        _load_oqs_module({LIBOQS_PATH_ENV_VAR: str(stub_liboqs)})
    assert str(caught.value) == (
        "liboqs backend unavailable: liboqs-python failed to import "
        "(No module named 'oqs_missing_dependency'); "
        "reinstall it with `pip install 'tensorguard[oqs]'`"
    )


@pytest.mark.parametrize(
    ("start", "event"),
    [
        ('import os\nos.system("true")\n', "os.system"),
        ('import subprocess\nsubprocess.run(["true"])\n', "subprocess.Popen"),
        ('import os\nos.posix_spawn("/bin/true", ["true"], {})\n', "os.posix_spawn"),
    ],
    ids=["os.system", "subprocess", "posix_spawn"],
)
def test_every_way_of_starting_a_process_is_refused_during_the_import(
    oqs_package: Callable[[str], None], stub_liboqs: Path, start: str, event: str
) -> None:
    oqs_package(start)
    with pytest.raises(BackendUnavailableError) as caught:
        _load_oqs_module({LIBOQS_PATH_ENV_VAR: str(stub_liboqs)})
    assert str(caught.value) == (
        f"liboqs backend unavailable: liboqs-python could not use the liboqs library "
        f"'{stub_liboqs}' (_ProcessRefused: liboqs-python tried to start a process "
        f"({event}) while being imported); {REMEDY}"
    )


def test_liboqs_python_info_lines_are_dropped_and_warnings_kept(
    oqs_package: Callable[[str], None], stub_liboqs: Path, caplog: pytest.LogCaptureFixture
) -> None:
    oqs_package(
        "import logging\n"
        'logging.getLogger("oqs.oqs").info("stand-in info line")\n'
        'logging.getLogger("oqs.oqs").warning("stand-in warning line")\n'
    )
    caplog.set_level(logging.INFO)
    _load_oqs_module({LIBOQS_PATH_ENV_VAR: str(stub_liboqs)})
    messages = [record.getMessage() for record in caplog.records]
    assert "stand-in warning line" in messages
    assert "stand-in info line" not in messages


# --- the liboqs backend, on liboqs-python's API --------------------------------------


def test_the_liboqs_backend_interoperates_with_the_default_backend(
    oqs_package: Callable[[str], None],
) -> None:
    oqs_package(stand_in())
    backend, default = LibOQSBackend(), CryptographyBackend()
    assert backend.name == "liboqs"
    signing_seed = secrets.token_bytes(32)
    public_key = default.mldsa65_public_key(signing_seed)
    signature = default.mldsa65_sign(signing_seed, b"message", b"context")
    assert backend.mldsa65_verify(public_key, b"message", signature, b"context") is True
    assert backend.mldsa65_verify(public_key, b"message", signature, b"other") is False
    assert backend.mldsa65_verify(public_key, b"massage", signature, b"context") is False
    assert _live(backend) == []

    kem_seed = secrets.token_bytes(64)
    kem_public = backend.mlkem768_public_key(kem_seed)
    assert type(kem_public) is bytes
    assert kem_public == default.mlkem768_public_key(kem_seed)
    secret, ciphertext = backend.mlkem768_encapsulate(kem_public)
    assert (type(secret), len(secret), type(ciphertext), len(ciphertext)) == (
        bytes,
        32,
        bytes,
        1088,
    )
    assert default.mlkem768_decapsulate(kem_seed, ciphertext) == secret
    received = backend.mlkem768_decapsulate(kem_seed, ciphertext)
    assert (type(received), received) == (bytes, secret)
    their_secret, their_ciphertext = default.mlkem768_encapsulate(kem_public)
    assert backend.mlkem768_decapsulate(kem_seed, their_ciphertext) == their_secret
    assert _live(backend) == [], "every liboqs object is freed"


def test_the_liboqs_backend_refuses_wrong_sizes_before_calling_liboqs(
    oqs_package: Callable[[str], None],
) -> None:
    oqs_package(stand_in())
    backend = LibOQSBackend()
    cases: list[tuple[Callable[[], object], type[Exception], str]] = [
        (
            lambda: backend.mldsa65_verify(bytes(1951), b"m", bytes(3309), b""),
            KeyFormatError,
            "ML-DSA-65 public key has the wrong length",
        ),
        (
            lambda: backend.mlkem768_encapsulate(bytes(1185)),
            KeyFormatError,
            "ML-KEM-768 public key has the wrong length",
        ),
        (
            lambda: backend.mlkem768_decapsulate(bytes(64), bytes(1087)),
            KEMError,
            "ML-KEM-768 ciphertext has the wrong length",
        ),
        (
            lambda: backend.mlkem768_public_key(bytes(65)),
            KeyFormatError,
            "ML-KEM-768 seed must be 64 bytes",
        ),
        (
            lambda: backend.mlkem768_decapsulate(bytes(63), bytes(1088)),
            KeyFormatError,
            "ML-KEM-768 seed must be 64 bytes",
        ),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as caught:
            call()
        assert type(caught.value) is error
        assert str(caught.value) == message
    assert _live(backend) == []


def test_the_liboqs_backend_refuses_to_sign_and_says_which_backend_can(
    oqs_package: Callable[[str], None],
) -> None:
    oqs_package(stand_in())
    backend = LibOQSBackend()
    message = (
        "liboqs backend cannot sign: liboqs-python has no seed-based ML-DSA-65 key "
        "generation and TensorGuard keys are stored as FIPS 204 seeds; sign with the "
        "'cryptography' backend (TG_PQC_BACKEND=cryptography)"
    )
    calls: list[Callable[[], object]] = [
        lambda: backend.mldsa65_public_key(bytes(32)),
        lambda: backend.mldsa65_sign(bytes(32), b"m", b""),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailableError) as caught:
            call()
        assert str(caught.value) == message


@pytest.mark.parametrize(
    ("sigs", "kems", "missing"),
    [
        ((), ("ML-KEM-768",), "['ML-DSA-65']"),
        (("ML-DSA-65",), ("Kyber768",), "['ML-KEM-768']"),
        (("ML-DSA-44",), (), "['ML-DSA-65', 'ML-KEM-768']"),
    ],
)
def test_a_liboqs_build_without_the_mechanisms_is_refused_by_name(
    oqs_package: Callable[[str], None],
    sigs: tuple[str, ...],
    kems: tuple[str, ...],
    missing: str,
) -> None:
    oqs_package(stand_in(sigs, kems))
    with pytest.raises(BackendUnavailableError) as caught:
        LibOQSBackend()
    assert str(caught.value) == (
        f"liboqs backend unavailable: this liboqs build does not enable {missing}; "
        "rebuild liboqs with ML-DSA and ML-KEM enabled"
    )


def test_a_liboqs_python_without_seeded_keys_is_refused_and_frees_its_kem(
    oqs_package: Callable[[str], None],
) -> None:
    oqs_package(stand_in(seeded=False))
    backend = LibOQSBackend()
    calls: list[Callable[[], object]] = [
        lambda: backend.mlkem768_public_key(bytes(64)),
        lambda: backend.mlkem768_decapsulate(bytes(64), bytes(1088)),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailableError) as caught:
            call()
        assert str(caught.value) == (
            "liboqs backend cannot derive ML-KEM-768 keys from a seed: upgrade "
            "liboqs-python to a release with KeyEncapsulation.generate_keypair_seed"
        )
    assert _live(backend) == []
