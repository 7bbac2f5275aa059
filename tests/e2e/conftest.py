"""Fixtures for end-to-end rounds: the real Dagster pipeline, real services, temp state.

Each test module runs its expensive round once (module-scoped fixtures) in its own temp
state dir and Dagster instance. The base model that most scenarios start from is built
once per session with the core library and handed to ``base_model`` as a local Hugging
Face directory; the SQLite full round builds its own through the asset, as
``make demo`` does.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from tensorguard.sites import demo_site_registry
from tensorguard.training.base_model import build_default_base_model
from tests.e2e.rounds import run_full_round

__all__ = ["run_full_round", "unique_fleet"]


def unique_fleet(prefix: str) -> str:
    """A fleet name no other test uses, so retained MQTT messages cannot leak between tests."""
    return f"{prefix}-{secrets.token_hex(4)}"


@pytest.fixture(scope="session")
def demo_sites() -> list[str]:
    """The shipped demo sites' ids, sorted."""
    return sorted(demo_site_registry())


@pytest.fixture(scope="session")
def prebuilt_base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's small Llama-style base model, built once per session (core library)."""
    model_dir = tmp_path_factory.mktemp("prebuilt-base-model") / "model"
    return build_default_base_model(model_dir, seed=0).path
