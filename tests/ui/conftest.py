"""Fixtures for the browser tests: a served Dagster UI, a probe site, headless Chromium."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance
from playwright.sync_api import Page, expect
from sqlalchemy.engine import make_url

from tensorguard_assets.demo import run_round
from tensorguard_assets.partitions import (
    DEFAULT_ROUND_START,
    make_round_partitions,
    site_partitions,
)
from tests.services.dagster_webserver import DagsterUI, prepare_dagster_home, running_dagster_ui
from tests.services.postgres import PostgresServer, fresh_database
from tests.ui.browser import chromium_page
from tests.ui.dagster_pages import PAGE_LOAD_MS
from tests.ui.screenshots import Screenshots
from tests.ui.served_location import ROUND_CADENCE, ProbeSite, location_env, write_probe_site

SCREENSHOT_DIR_ENV = "TG_UI_SCREENSHOT_DIR"
ROUND_LOCAL_STEPS = 8
# The UI answers slowly on a loaded 2-core machine (a dialog's first query took over 5 s,
# Playwright's default wait for an expectation): wait up to the page-load limit instead.
expect.set_options(timeout=PAGE_LOAD_MS)
UI_STARTUP_TIMEOUT = 360.0
"""The webserver loads three code locations one after another (each imports torch and
transformers): over two minutes on a loaded 2-core machine."""
"""Optimiser steps per site in the UI test's round (the UI is under test, not training)."""


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
def dagster_home(tmp_path: Path, probe_site: ProbeSite, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The UI's DAGSTER_HOME: the instance config and the registered sites."""
    home = prepare_dagster_home(tmp_path / "dagster_home")
    register_sites(home, probe_site.site_ids, monkeypatch)
    return home


@pytest.fixture
def served_round(
    dagster_home: Path, tmp_path: Path, probe_site: ProbeSite, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The latest round, run as ``make demo`` runs it (every stage a recorded run) on the
    UI's instance and artifact root before the UI starts, so the UI shows a released
    round: the probe site and one demo site, few local steps. Returns the round key."""
    round_key = make_round_partitions(ROUND_CADENCE, DEFAULT_ROUND_START).get_last_partition_key()
    assert round_key is not None, f"no complete round since {DEFAULT_ROUND_START}"
    sites = [probe_site.probe_id, next(s for s in probe_site.site_ids if s != probe_site.probe_id)]
    with monkeypatch.context() as patch:
        for name, value in location_env(probe_site, tmp_path / "artifacts").items():
            patch.setenv(name, value)
        patch.chdir(dagster_home)
        instance = DagsterInstance.from_config(str(dagster_home))
        try:
            completed = run_round(instance, round_key, sites, local_steps=ROUND_LOCAL_STEPS)
        finally:
            instance.dispose()
    assert completed, f"the UI test's round {round_key} failed (see the captured output)"
    return round_key


@pytest.fixture
def served_secrets(postgres_server: PostgresServer) -> Iterator[dict[str, str]]:
    """Secrets in the UI's environment, as production has them: ``DATABASE_URL`` (a real
    database, its URL carrying a password) and the broker password."""
    with fresh_database(postgres_server, prefix="ui") as url:
        password = secrets.token_urlsafe(18)
        yield {
            "DATABASE_URL": make_url(url)
            .set(password=password)
            .render_as_string(hide_password=False),
            "TG_MQTT_PASSWORD": secrets.token_urlsafe(18),
        }


@pytest.fixture
def dagster_ui(
    dagster_home: Path,
    served_round: str,
    served_secrets: dict[str, str],
    tmp_path: Path,
    probe_site: ProbeSite,
) -> Iterator[DagsterUI]:
    """dagster-webserver and dagster-daemon serving TensorGuard's code location, after
    ``served_round``, with ``served_secrets`` in their environment."""
    del served_round  # run first, into the same instance and artifact root
    env = {**os.environ, **location_env(probe_site, tmp_path / "artifacts"), **served_secrets}
    with running_dagster_ui(dagster_home, env, startup_timeout=UI_STARTUP_TIMEOUT) as ui:
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
