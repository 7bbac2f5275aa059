"""Backend selection, the TG_PQC_REQUIRED gate and the backend self-test."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tensorguard.crypto._backends import (
    CryptographyBackend,
    LibOQSBackend,
    PQCBackend,
    PQCRequirementError,
    available_backends,
    enforce_pqc_requirement,
    get_backend,
    liboqs_library_path,
    require_pqc_backend,
    self_test,
)
from tensorguard.crypto._errors import BackendUnavailableError
from tensorguard.errors import ConfigurationError, ProductionGateError


class AcceptsEverything(CryptographyBackend):
    """A broken backend: every signature 'verifies'."""

    @property
    def name(self) -> str:
        return "accepts-everything"

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        del public_key, message, signature, context  # the backend interface; all ignored
        return True


class LeakyKEM(CryptographyBackend):
    """A broken backend: decapsulation ignores the key."""

    @property
    def name(self) -> str:
        return "leaky-kem"

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        del seed, ciphertext  # the backend interface; the leak is that both are ignored
        return bytes(32)

    def mlkem768_encapsulate(self, public_key: bytes) -> tuple[bytes, bytes]:
        _, ciphertext = super().mlkem768_encapsulate(public_key)
        return bytes(32), ciphertext


def test_default_backend_is_cryptography() -> None:
    assert get_backend(environ={}).name == "cryptography"
    assert get_backend(environ={"TG_PQC_BACKEND": "cryptography"}).name == "cryptography"


def test_unknown_backend_name_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not a known PQC backend"):
        get_backend(environ={"TG_PQC_BACKEND": "rot13"})


def test_available_backends_pass_their_self_test() -> None:
    backends = available_backends()
    assert "cryptography" in [b.name for b in backends]
    for backend in backends:
        if backend.name == "cryptography":
            self_test(backend)


def test_liboqs_backend_matches_library_presence() -> None:
    if liboqs_library_path() is None:
        with pytest.raises(BackendUnavailableError, match="liboqs shared library is not installed"):
            LibOQSBackend()
        assert "liboqs" not in [b.name for b in available_backends()]
    else:
        backend = LibOQSBackend()
        assert isinstance(backend, PQCBackend)
        with pytest.raises(BackendUnavailableError, match="cannot sign"):
            backend.mldsa65_sign(bytes(32), b"m", b"")


def test_importing_crypto_never_imports_oqs() -> None:
    code = (
        "import sys, tensorguard.crypto, tensorguard.crypto._backends; print('oqs' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_self_test_catches_a_backend_that_accepts_forgeries() -> None:
    with pytest.raises(BackendUnavailableError, match="accepted a signature"):
        self_test(AcceptsEverything())


def test_self_test_catches_a_kem_that_ignores_the_key() -> None:
    with pytest.raises(BackendUnavailableError, match="wrong key"):
        self_test(LeakyKEM())


def test_require_returns_a_working_backend() -> None:
    assert require_pqc_backend(environ={}).name == "cryptography"


def test_require_refuses_a_broken_backend() -> None:
    with pytest.raises(PQCRequirementError):
        require_pqc_backend(AcceptsEverything())


def test_requirement_off_by_default() -> None:
    assert enforce_pqc_requirement(environ={}) is None
    assert enforce_pqc_requirement(environ={"TG_PQC_REQUIRED": "false"}) is None


def test_requirement_on_self_tests_the_backend() -> None:
    backend = enforce_pqc_requirement(environ={"TG_PQC_REQUIRED": "true"})
    assert backend is not None
    assert backend.name == "cryptography"


@pytest.mark.skipif(liboqs_library_path() is not None, reason="liboqs is installed here")
def test_requirement_on_without_a_working_backend_refuses() -> None:
    env = {"TG_PQC_REQUIRED": "true", "TG_PQC_BACKEND": "liboqs"}
    with pytest.raises(PQCRequirementError) as caught:
        enforce_pqc_requirement(environ=env)
    assert isinstance(caught.value, ProductionGateError)
    assert "TG_PQC_REQUIRED" in str(caught.value)


def test_requirement_flag_must_be_boolean() -> None:
    with pytest.raises(ConfigurationError):
        enforce_pqc_requirement(environ={"TG_PQC_REQUIRED": "maybe"})


def test_requirement_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_PQC_REQUIRED", "true")
    monkeypatch.setenv("TG_PQC_BACKEND", "no-such-backend")
    with pytest.raises(PQCRequirementError):
        enforce_pqc_requirement()
