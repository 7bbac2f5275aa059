"""Fixtures for the browser tests: a served Dagster UI, a probe site, headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance
from playwright.sync_api import Page

from tensorguard_assets.partitions import site_partitions
from tests.services.dagster_webserver import DagsterUI, prepare_dagster_home, running_dagster_ui
from tests.ui.browser import chromium_page
from tests.ui.screenshots import Screenshots
from tests.ui.served_location import ProbeSite, location_env, write_probe_site

SCREENSHOT_DIR_ENV = "TG_UI_SCREENSHOT_DIR"


@pytest.fixture(scope="session")
def screenshot_export_dir() -> Path | None:
    """Where to copy screenshots (TG_UI_SCREENSHOT_DIR), read before the env is cleaned."""
    value = os.environ.get(SCREENSHOT_DIR_ENV)
    return Path(value) if value else None


@pytest.fixture
def probe_site(tmp_path: Path) -> ProbeSite:
    """The demo sites plus a probe site with its own data, in a registry file."""
    return write_probe_site(tmp_path / "sites")


def register_sites(
    dagster_home: Path, site_ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Add the ``sites`` dynamic partitions to the instance in ``dagster_home``.

    The instance config may hold paths relative to the working directory (as the
    services run from ``dagster_home``), so the instance is opened from there too.
    """
    with monkeypatch.context() as patch:
        patch.chdir(dagster_home)
        instance = DagsterInstance.from_config(str(dagster_home))
        try:
            instance.add_dynamic_partitions(site_partitions.name or "sites", site_ids)
        finally:
            instance.dispose()


@pytest.fixture
def dagster_ui(
    tmp_path: Path, probe_site: ProbeSite, monkeypatch: pytest.MonkeyPatch
) -> Iterator[DagsterUI]:
    """dagster-webserver and dagster-daemon serving TensorGuard's code location."""
    home = prepare_dagster_home(tmp_path / "dagster_home")
    register_sites(home, probe_site.site_ids, monkeypatch)
    env = {**os.environ, **location_env(probe_site, tmp_path / "artifacts")}
    with running_dagster_ui(home, env) as ui:
        yield ui


@pytest.fixture
def browser_page(tmp_path: Path) -> Iterator[Page]:
    """A page in a fresh headless Chromium profile."""
    with chromium_page(tmp_path / "chromium-profile") as page:
        yield page


@pytest.fixture
def screenshots(
    browser_page: Page, tmp_path: Path, screenshot_export_dir: Path | None
) -> Screenshots:
    """Screenshot recorder for the test's page."""
    return Screenshots(browser_page, tmp_path / "screenshots", screenshot_export_dir)
