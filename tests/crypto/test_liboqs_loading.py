"""The liboqs backend loads liboqs itself first and never lets liboqs-python download it.

liboqs-python, when it cannot load liboqs, counts down, runs ``git clone`` and ``cmake``,
then calls ``sys.exit``; it raises ``RuntimeError`` elsewhere. These tests stand in for it
with small ``oqs`` packages that do exactly that (no network: a fake ``git`` on ``PATH``
records whether it ran), and for liboqs with a file that is not a library and a compiled
stub that exports liboqs' entry points.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode
from tensorguard.crypto._backends import get_backend, liboqs_library_path
from tensorguard.crypto._backends.liboqs import LIBOQS_PATH_ENV_VAR, load_liboqs_library
from tensorguard.crypto._errors import BackendUnavailableError

STUB_SOURCE = """
int OQS_init(void) { return 0; }
const char *OQS_version(void) { return "0.0.0-stub"; }
void *OQS_SIG_new(const char *name) { (void)name; return 0; }
void *OQS_KEM_new(const char *name) { (void)name; return 0; }
"""

# liboqs-python's fallback, reduced to what matters: look for the library, and when it
# does not load, "install" it with git, then exit the interpreter.
DOWNLOADING_OQS = """
import ctypes, ctypes.util, subprocess, sys
path = ctypes.util.find_library("oqs")
try:
    ctypes.CDLL(path or "liboqs.so")
except OSError:
    pass
subprocess.call("git clone https://github.com/open-quantum-safe/liboqs", shell=True)
sys.exit("Could not load liboqs shared library")
"""
EXITING_OQS = 'import sys\nsys.exit("Could not load liboqs shared library")\n'
RAISING_OQS = 'raise RuntimeError("No oqs shared libraries found")\n'


@pytest.fixture(scope="module")
def stub_liboqs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A loadable shared library named liboqs.so that exports liboqs' entry points."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build the stub library")
    root = tmp_path_factory.mktemp("stub-liboqs")
    (root / "stub.c").write_text(STUB_SOURCE)
    library = root / "liboqs.so"
    subprocess.run(
        [compiler, "-shared", "-fPIC", "-o", str(library), str(root / "stub.c")], check=True
    )
    return library


@pytest.fixture
def unloadable_liboqs(tmp_path: Path) -> Path:
    """A file named liboqs.so that a library search finds but the loader cannot load."""
    library_dir = tmp_path / "lib"
    library_dir.mkdir()
    library = library_dir / "liboqs.so"
    library.write_bytes(b"\x7fELF but not really a shared object\n" * 4)
    return library


@pytest.fixture
def fake_git(tmp_path: Path) -> tuple[Path, Path]:
    """A ``git`` that only records that it ran; returns (bin dir, marker file)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "git-ran"
    git = bin_dir / "git"
    git.write_text(f'#!/bin/sh\necho "$@" > {marker}\n')
    git.chmod(0o755)
    return bin_dir, marker


def _oqs_package(root: Path, body: str) -> Path:
    package = root / "fake-site" / "oqs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body)
    return package.parent


@pytest.fixture
def fake_oqs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Install a stand-in ``oqs`` package on ``sys.path``; yields a function taking its body."""

    def install(body: str) -> Path:
        site = _oqs_package(tmp_path, body)
        monkeypatch.syspath_prepend(str(site))
        return site

    monkeypatch.delitem(sys.modules, "oqs", raising=False)
    yield install
    sys.modules.pop("oqs", None)


def test_a_file_that_is_not_a_library_is_a_clear_error(unloadable_liboqs: Path) -> None:
    environ = {LIBOQS_PATH_ENV_VAR: str(unloadable_liboqs)}
    with pytest.raises(BackendUnavailableError, match="found but cannot be used") as caught:
        load_liboqs_library(environ)
    assert str(unloadable_liboqs) in str(caught.value)
    assert "TG_PQC_BACKEND=cryptography" in str(caught.value)
    assert liboqs_library_path(environ) is None


def test_a_library_without_liboqs_symbols_is_refused() -> None:
    if sys.platform != "linux":
        pytest.skip("uses glibc's libc.so.6 as the foreign library")
    with pytest.raises(BackendUnavailableError, match="is not liboqs"):
        load_liboqs_library({LIBOQS_PATH_ENV_VAR: "libc.so.6"})


def test_no_library_says_not_installed(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailableError, match="not installed"):
        load_liboqs_library({LIBOQS_PATH_ENV_VAR: str(tmp_path / "absent" / "liboqs.so")})


def test_the_stub_library_loads(stub_liboqs: Path) -> None:
    name, library = load_liboqs_library({LIBOQS_PATH_ENV_VAR: str(stub_liboqs)})
    assert name == str(stub_liboqs)
    assert library.OQS_init() == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [(EXITING_OQS, "SystemExit"), (RAISING_OQS, "RuntimeError")],
    ids=["sys-exit", "runtime-error"],
)
def test_liboqs_python_exiting_or_raising_becomes_backend_unavailable(
    monkeypatch: pytest.MonkeyPatch,
    fake_oqs: Callable[[str], Path],
    stub_liboqs: Path,
    body: str,
    reason: str,
) -> None:
    fake_oqs(body)
    monkeypatch.setenv(LIBOQS_PATH_ENV_VAR, str(stub_liboqs))
    with pytest.raises(BackendUnavailableError, match=reason):
        get_backend("liboqs")


def test_liboqs_python_cannot_start_its_download(
    monkeypatch: pytest.MonkeyPatch,
    fake_oqs: Callable[[str], Path],
    fake_git: tuple[Path, Path],
    stub_liboqs: Path,
) -> None:
    bin_dir, marker = fake_git
    fake_oqs(DOWNLOADING_OQS)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv(LIBOQS_PATH_ENV_VAR, str(stub_liboqs))
    with pytest.raises(BackendUnavailableError, match="tried to start a process"):
        get_backend("liboqs")
    assert not marker.exists()
    # the guard is off again outside the import
    assert subprocess.run(["git", "--version"], check=False).returncode == 0
    assert marker.exists()


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )


def _tensorguard_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TG_")}
    env.update(extra)
    return env


def test_loading_the_backends_starts_no_process(unloadable_liboqs: Path) -> None:
    code = textwrap.dedent(
        """
        import sys
        spawned = []
        sys.addaudithook(
            lambda event, args: spawned.append(event)
            if event in ("subprocess.Popen", "os.system", "os.posix_spawn", "os.fork")
            else None
        )
        from tensorguard.crypto._backends import available_backends, liboqs_library_path
        liboqs_library_path()
        names = [backend.name for backend in available_backends()]
        print(names, spawned)
        """
    )
    env = _tensorguard_env(LD_LIBRARY_PATH=str(unloadable_liboqs.parent))
    result = _run_python(code, env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['cryptography'] []"


def test_cli_with_an_unloadable_liboqs_refuses_cleanly_and_downloads_nothing(
    tmp_path: Path, unloadable_liboqs: Path, fake_git: tuple[Path, Path]
) -> None:
    """The reported failure: a liboqs.so on the library path that does not load."""
    from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
    from tensorguard.tgsp import ModelIdentity, ReleaseInfo, TrustStore, build_package

    producer = CompositeSigningKey.generate()
    trust = tmp_path / "trust.json"
    TrustStore([producer.public_key()]).save(trust)
    source = tmp_path / "adapter"
    source.mkdir()
    (source / "weights.bin").write_bytes(os.urandom(256))
    package = tmp_path / "release.tgsp"
    now = int(time.time())
    release = ReleaseInfo(
        channel="stable",
        version=1,
        created_at=now - 60,
        expires_at=now + 86_400,
        model=ModelIdentity("tiny-lora", "ab" * 32),
    )
    build_package(
        source,
        package,
        signer=producer,
        recipients=[XWingPrivateKey.generate().public_key()],
        release=release,
    )
    bin_dir, marker = fake_git
    site = _oqs_package(tmp_path, DOWNLOADING_OQS)
    env = _tensorguard_env(
        TG_PQC_BACKEND="liboqs",
        LD_LIBRARY_PATH=str(unloadable_liboqs.parent),
        PYTHONPATH=str(site),
        PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tensorguard",
            "tgsp",
            "verify",
            str(package),
            "--trust-store",
            str(trust),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=120,
    )
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert "Traceback" not in result.stderr
    assert "liboqs backend unavailable" in result.stderr
    assert "found but cannot be used" in result.stderr
    assert result.stdout == ""
    assert not marker.exists()
