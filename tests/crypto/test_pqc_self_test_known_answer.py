"""The PQC self-test's known answer, and backends that verify but cannot sign.

``TG_PQC_REQUIRED=true`` must accept a backend that does the work a node needs: the
liboqs backend verifies ML-DSA-65 and does ML-KEM-768 but cannot sign (liboqs-python has
no seeded ML-DSA keys). Such a backend is judged on an ML-DSA-65 signature shipped in
``tensorguard/crypto/_backends/mldsa65_known_answer.json``: it must accept it, and
refuse it over another message or under another context. A signing backend is checked on
the known answer and on a fresh key of its own. The verify-only backends here are real
subclasses of the default backend whose signing refuses the way liboqs' does.
"""

from __future__ import annotations

import base64
import json
from importlib import resources

import pytest

from tensorguard.crypto import SigningUnsupportedError
from tensorguard.crypto._backends import (
    CryptographyBackend,
    PQCRequirementError,
    require_pqc_backend,
    self_test,
)
from tensorguard.crypto._backends.base import MLDSA65_PUBLIC_KEY_SIZE, MLDSA65_SIGNATURE_SIZE
from tensorguard.crypto._errors import BackendUnavailableError
from tests.crypto.test_backend_choice_mutation_kills import RejectsEverything
from tests.crypto.test_backends import AcceptsEverything

DID_NOT_VERIFY = "a genuine ML-DSA-65 signature did not verify"
ACCEPTED_FORGERY = "ML-DSA-65 accepted a signature over a different message or context"


def known_answer() -> dict[str, str]:
    path = resources.files("tensorguard.crypto._backends").joinpath("mldsa65_known_answer.json")
    document: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    return document


class VerifyOnly(CryptographyBackend):
    """Verifies and encapsulates like the default backend; refuses to sign, as liboqs does."""

    @property
    def name(self) -> str:
        return "verify-only"

    def mldsa65_public_key(self, seed: bytes) -> bytes:
        del seed
        raise SigningUnsupportedError("this backend cannot sign")

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        del seed, message, context
        raise SigningUnsupportedError("this backend cannot sign")


class VerifyOnlyAcceptsEverything(VerifyOnly, AcceptsEverything):
    pass


class VerifyOnlyIgnoresContext(VerifyOnly):
    def mldsa65_verify(
        self, public_key: bytes, message: bytes, signature: bytes, context: bytes
    ) -> bool:
        del context  # the fault: any context verifies
        return super().mldsa65_verify(public_key, message, signature, b"tensorguard/pqc-self-test")


class VerifyOnlyRejectsEverything(VerifyOnly, RejectsEverything):
    pass


class SigningBreaks(CryptographyBackend):
    """A signing backend whose signer fails with an ordinary backend error."""

    @property
    def name(self) -> str:
        return "signing-breaks"

    def mldsa65_sign(self, seed: bytes, message: bytes, context: bytes) -> bytes:
        del seed, message, context
        raise BackendUnavailableError("ML-DSA-65 signing is not built into this library")


def test_the_known_answer_is_a_genuine_signature_from_its_seed() -> None:
    """The default backend derives the shipped public key from the shipped seed and
    accepts the shipped signature under the self-test's context, and nothing else."""
    answer = known_answer()
    backend = CryptographyBackend()
    public_key = base64.b64decode(answer["public_key"])
    signature = base64.b64decode(answer["signature"])
    message = answer["message"].encode("utf-8")
    context = answer["context"].encode("utf-8")
    assert (len(public_key), len(signature)) == (MLDSA65_PUBLIC_KEY_SIZE, MLDSA65_SIGNATURE_SIZE)
    assert backend.mldsa65_public_key(bytes.fromhex(answer["seed"])) == public_key
    assert context == b"tensorguard/pqc-self-test"
    assert backend.mldsa65_verify(public_key, message, signature, context)
    assert not backend.mldsa65_verify(public_key, message + b".", signature, context)
    assert not backend.mldsa65_verify(public_key, message, signature, b"")


def test_a_backend_that_verifies_correctly_but_cannot_sign_passes_and_is_required() -> None:
    self_test(VerifyOnly())
    assert require_pqc_backend(VerifyOnly()).name == "verify-only"


@pytest.mark.parametrize(
    ("backend", "faults"),
    [
        (VerifyOnlyAcceptsEverything(), ACCEPTED_FORGERY),
        (VerifyOnlyIgnoresContext(), ACCEPTED_FORGERY),
        (VerifyOnlyRejectsEverything(), DID_NOT_VERIFY),
    ],
    ids=["accepts-everything", "ignores-context", "rejects-everything"],
)
def test_a_verify_only_backend_is_judged_on_the_known_answer(
    backend: VerifyOnly, faults: str
) -> None:
    """Without the known answer a backend that cannot sign would have nothing to verify,
    and one that accepts every signature would pass."""
    with pytest.raises(PQCRequirementError) as caught:
        require_pqc_backend(backend)
    assert f"PQC backend 'verify-only' failed its self-test: {faults}." in str(caught.value)


def test_only_a_backend_that_cannot_sign_by_design_is_spared_the_fresh_signature() -> None:
    """A signer that breaks with any other error fails the self-test, naming the error."""
    with pytest.raises(BackendUnavailableError) as caught:
        self_test(SigningBreaks())
    assert str(caught.value) == (
        "PQC backend 'signing-breaks' failed its self-test: "
        "ML-DSA-65 signing is not built into this library"
    )
