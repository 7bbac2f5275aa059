"""TG_DETERMINISTIC parsing and what enable_determinism seeds (and does not)."""

from __future__ import annotations

import os
import random
import secrets

import numpy as np
import pytest
import torch

from tensorguard.errors import ConfigurationError
from tensorguard.training import determinism
from tensorguard.training.determinism import determinism_requested, enable_determinism


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "yes", "on", " True "])
def test_true_values(value: str) -> None:
    assert determinism_requested({"TG_DETERMINISTIC": value}) is True


@pytest.mark.parametrize("value", ["", "0", "false", "No", "off"])
def test_false_values(value: str) -> None:
    assert determinism_requested({"TG_DETERMINISTIC": value}) is False


def test_unset_means_off() -> None:
    assert determinism_requested({}) is False


def test_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_DETERMINISTIC", "yes")
    assert determinism_requested() is True


def test_unclear_value_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match="TG_DETERMINISTIC='maybe' is not a boolean"):
        determinism_requested({"TG_DETERMINISTIC": "maybe"})


def _draws() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


@pytest.mark.usefixtures("deterministic_torch")
def test_seeds_training_generators_and_reports_settings() -> None:
    report = enable_determinism(42)
    first = _draws()
    enable_determinism(42)
    assert _draws() == first
    enable_determinism(43)
    assert _draws() != first
    assert report.seed == 42
    assert report.deterministic_algorithms
    assert torch.are_deterministic_algorithms_enabled()
    assert report.torch_threads == torch.get_num_threads() == 1
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == report.cublas_workspace_config
    assert {"python", "torch", "transformers", "peft", "numpy"} <= set(report.versions)
    assert report.versions["torch"] == torch.__version__
    assert "cryptographic randomness is not seeded" in report.describe()


@pytest.mark.usefixtures("deterministic_torch")
def test_cryptographic_randomness_is_not_seeded() -> None:
    enable_determinism(7)
    first = (os.urandom(16), secrets.token_bytes(16))
    enable_determinism(7)
    assert (os.urandom(16), secrets.token_bytes(16)) != first


def test_module_documents_the_crypto_exclusion() -> None:
    doc = determinism.__doc__ or ""
    assert "NOT seeded" in doc
    assert "AEAD nonces" in doc


def test_negative_seed_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="non-negative"):
        enable_determinism(-1)
