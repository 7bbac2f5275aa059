"""The Dagster UI as the tests use it: lineage graph, launch dialog, partition details.

Each helper does what a user does (click, type, read) and waits on what the page shows,
never on fixed sleeps. Locators rely on visible text and ARIA roles, not on the UI's
generated CSS class names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import quote

from playwright.sync_api import Locator, Page, expect

# Asset and group nodes are drawn as <foreignObject>s on the lineage canvas (an <svg>);
# the sidebar's asset list is outside it.
GRAPH_NODE = "svg foreignObject"
# Zoomed out, the canvas truncates names longer than this in the middle ("abc…xyz").
MINIMAL_LABEL_LENGTH = 18
# A page's first GraphQL answers can take a while on a loaded machine (2 cores, a daemon).
PAGE_LOAD_MS = 30_000


def graph_label(name: str) -> str | re.Pattern[str]:
    """What the lineage canvas shows for an asset called ``name``.

    Short names are shown whole. Zoomed out, a longer name keeps its start and end
    around an ellipsis, so it is matched by its first and last two characters.
    """
    if len(name) <= MINIMAL_LABEL_LENGTH:
        return name
    return re.compile(rf"^{re.escape(name)}$|^{re.escape(name[:2])}.*….*{re.escape(name[-2:])}$")


class AssetLineagePage:
    """The global asset lineage graph (``/asset-groups``)."""

    def __init__(self, page: Page, base_url: str) -> None:
        self.page = page
        self.base_url = base_url

    def open(self) -> None:
        """Open the graph and wait until the canvas has drawn its first node."""
        self.page.goto(f"{self.base_url}/asset-groups")
        self.page.locator(GRAPH_NODE).first.wait_for(state="attached")

    def expand_all_groups(self) -> None:
        """Show every asset instead of one box per group (the graph settings menu).

        The UI remembers expanded groups per browser profile, so the menu may already
        offer "Collapse all groups"; then nothing is clicked.
        """
        self.page.get_by_role("button", name="settings", exact=True).click()
        toggle = self.page.get_by_role("menuitem", name=re.compile(r"(Expand|Collapse) all groups"))
        if toggle.inner_text().startswith("Expand"):
            toggle.click()
        expect(toggle).to_contain_text("Collapse all groups")
        self.page.keyboard.press("Escape")
        expect(toggle).to_have_count(0)

    def wait_for_live_data(self, timeout_ms: float = 30_000) -> None:
        """Wait until no node on the canvas still shows "Loading..." for its status."""
        loading = self.page.locator(GRAPH_NODE).get_by_text(re.compile(r"^Loading(\.\.\.|…)$"))
        expect(loading).to_have_count(0, timeout=timeout_ms)

    def asset_nodes(self, name: str) -> Locator:
        """The canvas nodes labelled with asset ``name``."""
        return self.page.locator(GRAPH_NODE).get_by_text(graph_label(name), exact=True)


def asset_url(base_url: str, asset_path: list[str], **query: str) -> str:
    """URL of an asset's page, with optional query parameters (``view``, ``partition``)."""
    url = f"{base_url}/assets/" + "/".join(quote(part, safe="") for part in asset_path)
    if query:
        url += "?" + "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items())
    return url


class LaunchDialog:
    """The "Launch runs to materialize …" dialog of a partitioned asset."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialog = page.get_by_role("dialog")

    @classmethod
    def open_from_asset_page(cls, page: Page, base_url: str, asset_path: list[str]) -> LaunchDialog:
        """Open the asset's page and click "Materialize…"."""
        page.goto(asset_url(base_url, asset_path))
        page.get_by_role("button", name="Materialize…").click()
        dialog = cls(page)
        expect(dialog.dialog.get_by_text("Launch runs to materialize")).to_be_visible()
        return dialog

    def dimension(self, name: str) -> Locator:
        """The dialog section that selects keys of partition dimension ``name``."""
        return self.dialog.locator(
            f"xpath=.//span[normalize-space()={_xpath_literal(name)}]"
            "/ancestor::div[.//button[normalize-space()='All']][1]"
        )

    def select_time_window_key(self, dimension: str, key: str) -> None:
        """Type ``key`` into a time-window dimension's range field."""
        field = self.dimension(dimension).get_by_role("textbox")
        field.fill(key)
        field.press("Enter")
        expect(field).to_have_value(key)

    def select_dynamic_key(self, dimension: str, key: str) -> None:
        """Tick ``key`` in a dynamic dimension's partition picker, then close the picker."""
        section = self.dimension(dimension)
        section.locator("[aria-haspopup]").click()
        self.page.get_by_placeholder("Filter partitions").fill(key)
        self.page.get_by_role("menuitem").filter(has=self.page.get_by_text(key, exact=True)).click()
        self.dialog.get_by_text("Launch runs to materialize").click()
        expect(self.page.get_by_placeholder("Filter partitions")).to_have_count(0)
        expect(section.get_by_text(key, exact=True).first).to_be_visible()

    def launch_one_run(self) -> None:
        """Check that exactly one partition is selected and launch its run."""
        expect(self.dialog.get_by_text("1 partition", exact=True)).to_be_visible()
        self.dialog.get_by_role("button", name="Launch 1 run").click()
        expect(self.dialog).to_have_count(0)


def _xpath_literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    raise ValueError(f"cannot quote {text!r} for XPath")


class RunPage:
    """A run's page (``/runs/<id>``), reached from the "Launched run" toast."""

    FINAL_STATUS = re.compile(r"^(Success|Failure|Canceled)$")

    def __init__(self, page: Page) -> None:
        self.page = page

    @classmethod
    def open_from_launch_toast(cls, page: Page) -> RunPage:
        """Click "View" on the toast that announces the launched run."""
        expect(page.get_by_text("Launched run")).to_be_visible()
        page.get_by_role("link", name="View", exact=True).click()
        page.wait_for_url("**/runs/*")
        return cls(page)

    def tag(self, text: str) -> Locator:
        """A tag in the run header, such as ``partition: <key>``."""
        return self.page.get_by_text(text, exact=True).first

    def wait_for_final_status(self, timeout_ms: float) -> str:
        """Wait until the run header shows a final status and return it."""
        status = self.page.get_by_text(self.FINAL_STATUS).first
        expect(status).to_be_visible(timeout=timeout_ms)
        return status.inner_text().strip()


class PartitionDetails:
    """One partition's latest materialisation on the asset's Partitions tab."""

    def __init__(self, page: Page, base_url: str, asset_path: list[str], partition: str) -> None:
        self.page = page
        self.url = asset_url(base_url, asset_path, view="partitions", partition=partition)
        self.partition = partition

    def open(self) -> None:
        """Open the Partitions tab with ``partition`` selected."""
        self.page.goto(self.url)
        expect(self.page.get_by_text(self.partition, exact=True).first).to_be_visible()

    def expect_materialized(self) -> None:
        """The partition's status tag reads "Materialized"."""
        expect(self.page.get_by_text("Materialized", exact=True)).to_be_visible()

    def metadata_value(self, key: str) -> str:
        """The value shown for metadata entry ``key`` of the latest materialisation."""
        row = self.page.get_by_role("row").filter(
            has=self.page.get_by_role("cell", name=key, exact=True)
        )
        expect(row).to_have_count(1)
        return row.get_by_role("cell").nth(1).inner_text().strip()


def group_positions(page: Page, groups: Sequence[str]) -> dict[str, float]:
    """The left edge of each collapsed group's box on the lineage canvas, by group name."""
    positions: dict[str, float] = {}
    for group in groups:
        node = page.locator(GRAPH_NODE).get_by_text(group, exact=True)
        expect(node, f"group {group} on the lineage graph").to_have_count(1)
        box = node.bounding_box()
        assert box is not None, f"group {group} is not drawn"
        positions[group] = box["x"]
    return positions


class AssetOverview:
    """An asset's Overview tab: the latest materialisation's metadata as a table or plots."""

    def __init__(self, page: Page, base_url: str, asset_path: list[str]) -> None:
        self.page = page
        self.url = asset_url(base_url, asset_path)

    def open(self) -> None:
        """Open the Overview tab and wait for its metadata section."""
        self.page.goto(self.url)
        expect(self.page.get_by_role("button", name="Plots")).to_be_visible(timeout=PAGE_LOAD_MS)

    def show_plots(self) -> None:
        """Switch the metadata section to plots: one chart per numeric entry."""
        self.page.get_by_role("button", name="Plots").click()
        expect(self.page.locator("canvas").first).to_be_visible(timeout=PAGE_LOAD_MS)

    def plot_title(self, key: str) -> Locator:
        """The title of the chart of metadata entry ``key``."""
        return self.page.get_by_text(key, exact=True)

    def show_markdown(self, key: str) -> Locator:
        """Open the markdown of metadata entry ``key`` (its "[Show Markdown]" link) and
        return the dialog that renders it."""
        row = self.page.get_by_role("row").filter(
            has=self.page.get_by_role("cell", name=key, exact=True)
        )
        row.get_by_text("[Show Markdown]").click()
        dialog = self.page.get_by_role("dialog")
        expect(dialog).to_be_visible()
        return dialog


def resource_url(base_url: str, location: str, resource: str) -> str:
    """URL of a resource's page in a code location (its config as the UI shows it)."""
    return f"{base_url}/locations/{quote(location, safe='')}/resources/{quote(resource, safe='')}"
