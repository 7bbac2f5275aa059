"""The Dagster UI in headless Chromium: every asset in the graph, a partition run from the UI.

The user story: an ML engineer opens the UI, sees the whole pipeline, materialises one
site's data for the latest round from the asset's page, waits for the run to succeed and
reads the example count from the materialisation's metadata.
"""

from __future__ import annotations

from collections import Counter

import pytest
from playwright.sync_api import Page, expect

from tensorguard_assets.partitions import (
    DEFAULT_ROUND_START,
    ROUND_DIMENSION,
    SITE_DIMENSION,
    make_round_partitions,
)
from tests.asset_graph import asset_groups, asset_names
from tests.services.dagster_webserver import DagsterUI
from tests.ui.dagster_pages import AssetLineagePage, LaunchDialog, PartitionDetails, RunPage
from tests.ui.screenshots import Screenshots
from tests.ui.served_location import ROUND_CADENCE, ProbeSite

pytestmark = pytest.mark.slow

ASSET = ["site_dataset"]
METRIC = "train_examples"
RUN_TIMEOUT_MS = 120_000


def defined_asset_names() -> Counter[str]:
    """How many assets of each display name the pinned graph holds (one each)."""
    return Counter(asset_names())


def defined_group_count() -> int:
    """Number of asset groups; the graph collapses groups when there is more than one."""
    return len(asset_groups())


def find_every_asset(page: Page, ui: DagsterUI) -> None:
    """Open the lineage graph and check that each defined asset is drawn on it."""
    graph = AssetLineagePage(page, ui.url)
    graph.open()
    if defined_group_count() > 1:
        graph.expand_all_groups()
    names = defined_asset_names()
    assert names, "the code location defines no assets"
    for name, count in sorted(names.items()):
        expect(graph.asset_nodes(name), f"asset {name} in the lineage graph").to_have_count(count)
    graph.wait_for_live_data()


def test_partition_materialisation_from_the_ui(
    dagster_ui: DagsterUI, probe_site: ProbeSite, browser_page: Page, screenshots: Screenshots
) -> None:
    page = browser_page
    round_key = make_round_partitions(ROUND_CADENCE, DEFAULT_ROUND_START).get_last_partition_key()
    assert round_key is not None, f"no complete round since {DEFAULT_ROUND_START}"
    partition = f"{round_key}|{probe_site.probe_id}"
    expected_examples = probe_site.train_records()

    with screenshots.on_failure(context=dagster_ui.log_tails):
        find_every_asset(page, dagster_ui)
        screenshots.save("asset-graph")

        dialog = LaunchDialog.open_from_asset_page(page, dagster_ui.url, ASSET)
        dialog.select_time_window_key(ROUND_DIMENSION, round_key)
        dialog.select_dynamic_key(SITE_DIMENSION, probe_site.probe_id)
        screenshots.save("launch-dialog")
        dialog.launch_one_run()

        run = RunPage.open_from_launch_toast(page)
        expect(run.tag(f"partition: {partition}")).to_be_visible()
        status = run.wait_for_final_status(RUN_TIMEOUT_MS)
        screenshots.save("run")
        assert status == "Success", f"the {partition} run ended with {status}"

        details = PartitionDetails(page, dagster_ui.url, ASSET, partition)
        details.open()
        details.expect_materialized()
        shown = details.metadata_value(METRIC)
        screenshots.save("partition-metadata")
        assert shown == str(expected_examples), (
            f"the UI shows {METRIC}={shown} for {partition}; "
            f"{probe_site.probe_train_file} has {expected_examples} records"
        )

        find_every_asset(page, dagster_ui)
        screenshots.save("asset-graph-after-run")
