"""The Dagster UI in headless Chromium: the round's story, and a partition run from the UI.

The user story: an ML engineer runs a round (as ``make demo`` does), opens the UI and
sees the pipeline's groups left to right in the round's order and every asset, the
held-out losses plotted on ``evaluation_report`` (one series per site too), the model
card of ``tgsp_package``, and resources that show no secret of the environment; then
materialises one site's data for the latest round from the asset's page, waits for the
run to succeed and reads the example count from the materialisation's metadata.
"""

from __future__ import annotations

from collections import Counter

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy.engine import make_url

from tensorguard_assets.locations import COORDINATOR
from tensorguard_assets.partitions import ROUND_DIMENSION, SITE_DIMENSION
from tests.asset_graph import PIPELINE_GROUP_ORDER, asset_groups, asset_names
from tests.services.dagster_webserver import DagsterUI
from tests.ui.dagster_pages import (
    PAGE_LOAD_MS,
    AssetLineagePage,
    AssetOverview,
    LaunchDialog,
    PartitionDetails,
    RunPage,
    group_positions,
    resource_url,
)
from tests.ui.screenshots import Screenshots
from tests.ui.served_location import ProbeSite

pytestmark = pytest.mark.slow

ASSET = ["site_dataset"]
METRIC = "train_examples"
# A run launched from the UI starts a process that imports torch and transformers: on a
# loaded 2-core machine over two minutes pass before its step ends (a wait, not a bound).
RUN_TIMEOUT_MS = 360_000


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


def check_groups_read_left_to_right(page: Page, ui: DagsterUI) -> None:
    """The collapsed lineage graph draws the round's groups in pipeline order, left to right."""
    graph = AssetLineagePage(page, ui.url)
    graph.open()
    positions = group_positions(page, PIPELINE_GROUP_ORDER)
    drawn = sorted(PIPELINE_GROUP_ORDER, key=lambda group: positions[group])
    assert drawn == list(PIPELINE_GROUP_ORDER), f"groups drawn left to right: {drawn}"


def check_evaluation_plots(page: Page, ui: DagsterUI, probe_id: str) -> None:
    """evaluation_report plots its held-out losses over the rounds, and one series per site."""
    overview = AssetOverview(page, ui.url, ["evaluation_report"])
    overview.open()
    overview.show_plots()
    for key in ("eval_loss_base", "eval_loss_global", "eval_loss_pruned"):
        expect(overview.plot_title(key), f"a plot of {key}").to_be_visible()
    expect(overview.plot_title(f"site_eval_loss_after[{probe_id}]")).to_be_visible()


def check_model_card(page: Page, ui: DagsterUI, round_key: str) -> None:
    """tgsp_package shows its MODEL_CARD.md, rendered, naming the round."""
    overview = AssetOverview(page, ui.url, ["tgsp_package"])
    overview.open()
    card = overview.show_markdown("model_card")
    expect(card.get_by_text("Model card:", exact=False).first).to_be_visible()
    expect(card.get_by_role("cell", name=round_key, exact=True).first).to_be_visible()


def check_no_secret_on_resource_pages(
    page: Page, ui: DagsterUI, secrets: dict[str, str], screenshots: Screenshots
) -> None:
    """No resource page of the code location shows a secret of the services' environment
    (nor the password inside DATABASE_URL)."""
    hidden = dict(secrets)
    hidden["DATABASE_URL password"] = str(make_url(secrets["DATABASE_URL"]).password)
    for resource in sorted(COORDINATOR.resource_keys()):
        page.goto(resource_url(ui.url, COORDINATOR.name, resource))
        expect(page.get_by_text("Description", exact=True).first).to_be_visible(
            timeout=PAGE_LOAD_MS
        )
        expect(page.get_by_text(resource, exact=True).first).to_be_visible()
        if resource == "fleet":
            expect(page.get_by_text("registry_root", exact=True).first).to_be_visible()
            screenshots.save("resource-fleet")
        content = page.content()
        shown = [name for name, value in hidden.items() if value in content]
        assert not shown, f"the {resource} resource page shows {shown}"


def test_partition_materialisation_from_the_ui(
    dagster_ui: DagsterUI,
    served_round: str,
    served_secrets: dict[str, str],
    probe_site: ProbeSite,
    browser_page: Page,
    screenshots: Screenshots,
) -> None:
    page = browser_page
    round_key = served_round
    partition = f"{round_key}|{probe_site.probe_id}"
    expected_examples = probe_site.train_records()

    with screenshots.on_failure(context=dagster_ui.log_tails):
        check_groups_read_left_to_right(page, dagster_ui)
        screenshots.save("asset-groups")

        check_evaluation_plots(page, dagster_ui, probe_site.probe_id)
        screenshots.save("evaluation-report-plots")

        check_model_card(page, dagster_ui, round_key)
        screenshots.save("model-card")

        check_no_secret_on_resource_pages(page, dagster_ui, served_secrets, screenshots)

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
