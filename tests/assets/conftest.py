"""Fixtures for running TensorGuard assets on real Dagster instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dagster import DagsterInstance, instance_for_test

from tensorguard.sites import demo_site_registry
from tensorguard_assets.partitions import site_partitions
from tensorguard_assets.resources import build_resources

DEMO_ROUND = "2026-11-20"


@pytest.fixture
def demo_site_ids() -> list[str]:
    """The ids of the shipped demo sites."""
    return sorted(demo_site_registry())


@pytest.fixture
def resources(tmp_path: Path) -> dict[str, Any]:
    """Resources writing artifacts under the test's temp dir."""
    return build_resources({"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")})


@pytest.fixture
def sqlite_instance(demo_site_ids: list[str]) -> Iterator[DagsterInstance]:
    """A temporary SQLite-backed Dagster instance with the demo sites registered."""
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(site_partitions.name, demo_site_ids)
        yield instance
