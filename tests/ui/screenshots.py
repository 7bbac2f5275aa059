"""Screenshots of the UI test: kept under pytest's temp dir, optionally exported."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Page


@dataclass
class Screenshots:
    """Numbered full-page screenshots of ``page`` written to ``directory``.

    When ``export_dir`` is set (``TG_UI_SCREENSHOT_DIR``), each file is copied there
    too, for CI artifacts.
    """

    page: Page
    directory: Path
    export_dir: Path | None = None
    saved: list[Path] = field(default_factory=list)

    def save(self, name: str) -> Path:
        """Capture the page as ``NN-name.png`` and return the path."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{len(self.saved) + 1:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        self.saved.append(path)
        if self.export_dir is not None:
            self.export_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, self.export_dir / path.name)
        print(f"UI screenshot: {path}")
        return path

    @contextmanager
    def on_failure(self, context: Callable[[], str] | None = None) -> Iterator[None]:
        """If the block raises: save a ``failure`` screenshot, print ``context()`` (for
        example the service logs), then re-raise."""
        try:
            yield
        except BaseException:
            self.save("failure")
            if context is not None:
                print(context())
            raise
