"""Shared fixtures for the crypto tests: published vectors and an independent ML-KEM."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kyber_py.ml_kem import ML_KEM_768

VECTOR_DIR = Path("/work/shared/vectors")
if not VECTOR_DIR.is_dir():  # the vectors also live beside the checkout in CI
    VECTOR_DIR = Path(__file__).resolve().parents[3] / "shared" / "vectors"


@dataclass(frozen=True)
class CompositeVector:
    """The LAMPS draft's id-MLDSA65-Ed25519-SHA512 test vector, decoded."""

    message: bytes
    context: bytes
    public_key: bytes
    private_key: bytes
    signature: bytes
    signature_with_context: bytes


def _load_json(name: str) -> Any:
    path = VECTOR_DIR / name
    if not path.is_file():
        pytest.fail(f"test vector {path} is missing; copy it from the shared vectors folder")
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def composite_vector() -> CompositeVector:
    data = _load_json("composite-mldsa65-ed25519.json")
    test = data["test"]
    return CompositeVector(
        message=base64.b64decode(data["m"]),
        context=base64.b64decode(data["ctx"]),
        public_key=base64.b64decode(test["pk"]),
        private_key=base64.b64decode(test["sk"]),
        signature=base64.b64decode(test["s"]),
        signature_with_context=base64.b64decode(test["sWithContext"]),
    )


@pytest.fixture(scope="session")
def xwing_vectors() -> list[dict[str, bytes]]:
    data = _load_json("xwing.json")
    return [{k: bytes.fromhex(v) for k, v in entry.items()} for entry in data["vectors"]]


class KyberPyDerandomizedMLKEM:
    """kyber-py's FIPS 203 ML-KEM-768 with caller-fixed encapsulation randomness."""

    def mlkem768_encapsulate_derand(
        self, public_key: bytes, randomness: bytes
    ) -> tuple[bytes, bytes]:
        shared_secret, ciphertext = ML_KEM_768._encaps_internal(public_key, randomness)
        return shared_secret, ciphertext


@pytest.fixture(scope="session")
def reference_mlkem() -> KyberPyDerandomizedMLKEM:
    return KyberPyDerandomizedMLKEM()
