"""Training fixtures: process-wide torch settings restored, one base model per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from tensorguard.training.base_model import BaseModelInfo, build_default_base_model
from tensorguard.training.determinism import enable_determinism

BASE_MODEL_SEED = 0


@pytest.fixture(scope="session")
def torch_settings_restored() -> Iterator[None]:
    """Undo :func:`enable_determinism`'s process-wide changes once the session ends."""
    with _restoring_torch_settings():
        yield


@pytest.fixture
def deterministic_torch() -> Iterator[None]:
    """Turn determinism on for one test, then restore the previous torch settings."""
    with _restoring_torch_settings():
        enable_determinism(BASE_MODEL_SEED)
        yield


@pytest.fixture(scope="session")
def base_model(
    tmp_path_factory: pytest.TempPathFactory, torch_settings_restored: None
) -> BaseModelInfo:
    """The default base model, built once with determinism on (about 10 s)."""
    del torch_settings_restored  # requested for its session teardown, not its value
    with _restoring_torch_settings():
        enable_determinism(BASE_MODEL_SEED)
        return build_default_base_model(
            tmp_path_factory.mktemp("base") / "model", seed=BASE_MODEL_SEED
        )


@contextmanager
def _restoring_torch_settings() -> Iterator[None]:
    """Save what enable_determinism changes process-wide, and restore it afterwards."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    cublas = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    rng_state = torch.random.get_rng_state()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = cublas
        torch.random.set_rng_state(rng_state)


def files_of(directory: Path) -> dict[str, bytes]:
    """Every regular file under ``directory`` as {relative path: bytes}."""
    return {
        path.relative_to(directory).as_posix(): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }
