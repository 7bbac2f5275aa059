"""Choosing and proving the PQC backend: every self-test fault, word for word (#18 item 6).

The mutation run over ``crypto/_backends/__init__.py`` found the self-test's fault
reports unchecked one by one (the existing tests matched a word of two of them), the
forged-message and forged-context probes indistinguishable (a backend that ignored only
one of the two passed when either probe was dropped), the wording of a self-test that
raised, which spellings ``TG_PQC_REQUIRED`` accepts, and ``available_backends`` with a
liboqs library present (none is installed here).

Each broken backend below is a real subclass of the default backend that changes one
behaviour, the way a miscompiled or tampered library would: the fault must be reported
with its full message. A working liboqs is stood in for as in
``test_backends_mutation_kills.py`` (a compiled stub library and an ``oqs`` package with
liboqs-python's API computed by ``cryptography``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tensorguard.crypto._backends import (
    CryptographyBackend,
    PQCBackend,
    PQCRequirementError,
    available_backends,
    enforce_pqc_requirement,
    get_backend,
    liboqs_library_path,
    require_pqc_backend,
    self_test,
)
from tensorguard.crypto._backends.liboqs import LIBOQS_PATH_ENV_VAR
from tensorguard.crypto._errors import BackendUnavailableError, KEMError
from tensorguard.errors import ConfigurationError
from tests.crypto.test_backends import AcceptsEverything
from tests.crypto.test_backends_mutation_kills import (  # noqa: F401 (fixtures)
    oqs_package,
    stand_in,
    stub_liboqs,
)

DID_NOT_VERIFY = "a genuine ML-DSA-65 signature did not verify"
ACCEPTED_FORGERY = "ML-DSA-65 accepted a signature over a different message or context"
DISAGREE = "ML-KEM-768 encapsulation and decapsulation disagree"
WRONG_KEY = "ML-KEM-768 released the secret to the wrong key"


class IgnoresMessage(CryptographyBackend):
    """Signs and verifies the empty message whatever it is given (context honoured)."""

    @property
    def name(self) -> str:
        return "ignores-message"

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        del message  # the fault: the message is not signed
        return super().mldsa65_sign(seed, b"", context)

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        del message  # the fault: the message is not checked
        return super().mldsa65_verify(public_key, b"", signature, context)


class IgnoresContext(CryptographyBackend):
    """Signs and verifies under the empty context whatever it is given."""

    @property
    def name(self) -> str:
        return "ignores-context"

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        del context  # the fault: the context is not bound
        return super().mldsa65_sign(seed, message, b"")

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        del context  # the fault: the context is not checked
        return super().mldsa65_verify(public_key, message, signature, b"")


class RejectsEverything(CryptographyBackend):
    """Every signature fails to verify."""

    @property
    def name(self) -> str:
        return "rejects-everything"

    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        del public_key, message, signature, context  # the fault: nothing is checked
        return False


class FixedSecret(CryptographyBackend):
    """Decapsulation returns 32 zero bytes instead of the encapsulated secret."""

    @property
    def name(self) -> str:
        return "fixed-secret"

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        del seed, ciphertext  # the fault: nothing is decapsulated
        return bytes(32)


class DecapsulatesWithTheLastKey(CryptographyBackend):
    """Decapsulation uses the last key it derived, not the one it is given."""

    @property
    def name(self) -> str:
        return "last-key"

    def mlkem768_public_key(self, seed: bytes) -> bytes:
        self._last_seed = seed
        return super().mlkem768_public_key(seed)

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        del seed  # the fault: any caller's key opens the last encapsulation
        return super().mlkem768_decapsulate(self._last_seed, ciphertext)


class DecapsulationFails(CryptographyBackend):
    """Decapsulation raises the layer's own error."""

    @property
    def name(self) -> str:
        return "kem-fails"

    def mlkem768_decapsulate(self, seed: bytes, ciphertext: bytes) -> bytes:
        del seed, ciphertext  # the fault: decapsulation cannot run
        raise KEMError("ML-KEM-768 decapsulation is not built into this library")


class RejectsAndFixedSecret(RejectsEverything, FixedSecret):
    @property
    def name(self) -> str:
        return "two-faults"


class AcceptsAndLastKey(AcceptsEverything, DecapsulatesWithTheLastKey):
    @property
    def name(self) -> str:
        return "two-more-faults"


FAULTS: list[tuple[str, Callable[[], PQCBackend], str]] = [
    # The shipped known answer does not verify on these two either: it binds its message
    # and its context.
    ("ignores-message", IgnoresMessage, f"{DID_NOT_VERIFY}; {ACCEPTED_FORGERY}"),
    ("ignores-context", IgnoresContext, f"{DID_NOT_VERIFY}; {ACCEPTED_FORGERY}"),
    ("rejects-everything", RejectsEverything, DID_NOT_VERIFY),
    ("accepts-everything", AcceptsEverything, ACCEPTED_FORGERY),
    ("fixed-secret", FixedSecret, DISAGREE),
    ("last-key", DecapsulatesWithTheLastKey, WRONG_KEY),
    ("two-faults", RejectsAndFixedSecret, f"{DID_NOT_VERIFY}; {DISAGREE}"),
    ("two-more-faults", AcceptsAndLastKey, f"{ACCEPTED_FORGERY}; {WRONG_KEY}"),
]


@pytest.mark.parametrize(
    ("make", "faults"), [case[1:] for case in FAULTS], ids=[case[0] for case in FAULTS]
)
def test_each_fault_is_reported_in_full(make: Callable[[], PQCBackend], faults: str) -> None:
    backend = make()
    with pytest.raises(BackendUnavailableError) as caught:
        self_test(backend)
    assert type(caught.value) is BackendUnavailableError
    assert str(caught.value) == f"PQC backend {backend.name!r} failed its self-test: {faults}"


def test_a_self_test_that_raises_says_which_backend_and_why() -> None:
    with pytest.raises(BackendUnavailableError) as caught:
        self_test(DecapsulationFails())
    assert str(caught.value) == (
        "PQC backend 'kem-fails' failed its self-test: "
        "ML-KEM-768 decapsulation is not built into this library"
    )
    assert isinstance(caught.value.__cause__, KEMError)


def test_the_requirement_refusal_says_how_to_fix_it() -> None:
    with pytest.raises(PQCRequirementError) as caught:
        require_pqc_backend(FixedSecret())
    assert str(caught.value) == (
        "a working post-quantum backend is required (TG_PQC_REQUIRED=true) but none is "
        f"available: PQC backend 'fixed-secret' failed its self-test: {DISAGREE}. "
        "Install cryptography>=48 built against OpenSSL 3.5+, or set TG_PQC_BACKEND to a "
        "working backend"
    )
    backend = IgnoresMessage()
    with pytest.raises(PQCRequirementError):
        require_pqc_backend(backend, environ={"TG_PQC_BACKEND": "cryptography"})


def test_an_unknown_backend_name_is_refused_with_the_choices() -> None:
    with pytest.raises(ConfigurationError) as caught:
        get_backend(environ={"TG_PQC_BACKEND": " rot13 "})
    assert str(caught.value) == (
        "TG_PQC_BACKEND='rot13' is not a known PQC backend; "
        "use 'cryptography' (default) or 'liboqs'"
    )


@pytest.mark.parametrize("flag", ["", "0", "false", "no", "off", " Off ", "FALSE", "No"])
def test_every_off_spelling_turns_the_requirement_off(flag: str) -> None:
    assert enforce_pqc_requirement({"TG_PQC_REQUIRED": flag, "TG_PQC_BACKEND": "rot13"}) is None


@pytest.mark.parametrize("flag", ["1", "true", "yes", "on", " ON ", "Yes", "TRUE"])
def test_every_on_spelling_self_tests_the_backend(flag: str) -> None:
    backend = enforce_pqc_requirement({"TG_PQC_REQUIRED": flag})
    assert backend is not None
    assert backend.name == "cryptography"
    with pytest.raises(PQCRequirementError, match="'rot13' is not a known PQC backend"):
        enforce_pqc_requirement({"TG_PQC_REQUIRED": flag, "TG_PQC_BACKEND": "rot13"})


def test_a_requirement_that_is_not_a_boolean_is_refused() -> None:
    with pytest.raises(ConfigurationError) as caught:
        enforce_pqc_requirement({"TG_PQC_REQUIRED": " Maybe "})
    assert type(caught.value) is ConfigurationError
    assert str(caught.value) == "TG_PQC_REQUIRED='maybe' is not a boolean; use 'true' or 'false'"


@pytest.fixture
def no_oqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delitem(sys.modules, "oqs", raising=False)
    yield
    sys.modules.pop("oqs", None)


@pytest.mark.usefixtures("no_oqs")
def test_a_present_but_unusable_liboqs_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
    stub_liboqs: Path,  # noqa: F811 (a fixture)
) -> None:
    """The library loads but liboqs-python is not installed: only the default remains."""
    monkeypatch.setenv(LIBOQS_PATH_ENV_VAR, str(stub_liboqs))
    assert liboqs_library_path() == str(stub_liboqs)
    assert [backend.name for backend in available_backends()] == ["cryptography"]


def test_a_working_liboqs_is_offered_after_the_default(
    oqs_package: Callable[[str], None],  # noqa: F811 (a fixture)
) -> None:
    """Both are offered, the default first, and both pass the self-test: the liboqs backend
    cannot sign (liboqs-python has no seeded ML-DSA-65 keys), so it is judged on the
    shipped known answer, and ``TG_PQC_REQUIRED=true`` accepts it on a verifying node."""
    oqs_package(stand_in())
    default, liboqs = available_backends()
    assert (type(default), type(liboqs).__name__) == (CryptographyBackend, "LibOQSBackend")
    self_test(default)
    self_test(liboqs)
    chosen = enforce_pqc_requirement({"TG_PQC_REQUIRED": "true", "TG_PQC_BACKEND": "liboqs"})
    assert chosen is not None
    assert chosen.name == "liboqs"
