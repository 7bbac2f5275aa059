"""Headless Debian Chromium driven by Playwright (no downloaded browser builds)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page, ViewportSize, sync_playwright

from tests.services.process import find_binary

# Flags for a quiet, offline, sandbox-free (CI runs as root) headless browser.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
VIEWPORT = ViewportSize(width=1920, height=1200)


@contextmanager
def chromium_page(user_data_dir: Path, *, default_timeout_ms: float = 30_000) -> Iterator[Page]:
    """A page in a fresh headless Chromium profile at ``user_data_dir``.

    The browser is the Debian ``chromium`` package; Playwright only supplies the
    driver, so `playwright install` (which downloads browsers) is never needed.
    """
    executable = find_binary("chromium")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(user_data_dir),
            executable_path=executable,
            headless=True,
            args=list(CHROMIUM_ARGS),
            viewport=VIEWPORT,
            timezone_id="UTC",
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(default_timeout_ms)
            yield page
        finally:
            context.close()
