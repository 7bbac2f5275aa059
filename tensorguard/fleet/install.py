"""Where the edge agent keeps releases, and how it switches between them atomically.

Layout under the agent's state directory::

    state.json                          high-water version and install per channel
    downloads/                          fetched packages (removed after each attempt) and
                                        partial downloads (``*.part``, resumed)
    releases/<channel>/v<N>-<random>/   extracted, verified release trees
    current/<channel> -> ../releases/<channel>/v<N>-<random>

``current/<channel>`` is a symbolic link replaced with one ``rename``: consumers see
the previous complete release or the new complete one, never a mix. The previous
release directory is deleted only after the switch and the state update succeeded.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from tensorguard.durable import atomic_symlink, ensure_directory

PARTIAL_SUFFIX = ".part"


class InstallLayout:
    """Paths of the agent's release store and the atomic ``current`` switch."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.downloads = state_dir / "downloads"
        self.releases = state_dir / "releases"
        self.current = state_dir / "current"

    def new_release_dir(self, channel: str, version: int) -> Path:
        """A fresh, not yet existing directory for a release (its parent is created)."""
        parent = self.releases / channel
        ensure_directory(parent)
        return parent / f"v{version}-{secrets.token_hex(6)}"

    def current_link(self, channel: str) -> Path:
        """The symbolic link consumers follow to the installed release of ``channel``."""
        return self.current / channel

    def current_target(self, channel: str) -> Path | None:
        """The release directory ``current/<channel>`` points to, if any."""
        link = self.current_link(channel)
        if not link.is_symlink():
            return None
        return (link.parent / os.readlink(link)).resolve()

    def activate(self, channel: str, release_dir: Path) -> None:
        """Point ``current/<channel>`` at ``release_dir`` with one atomic rename."""
        ensure_directory(self.current)
        atomic_symlink(os.path.relpath(release_dir, self.current), self.current_link(channel))

    def prune(self, channel: str, keep: set[Path]) -> list[Path]:
        """Remove release directories of ``channel`` other than ``keep``; return them."""
        parent = self.releases / channel
        if not parent.is_dir():
            return []
        kept = {path.resolve() for path in keep}
        removed = []
        for entry in sorted(parent.iterdir()):
            if entry.resolve() in kept:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        return removed

    def clear_downloads(self, *, keep_partial: bool = False) -> None:
        """Remove every fetched package (after a crash or an attempt); with
        ``keep_partial``, keep partial downloads (``*.part``) so they can be resumed."""
        if self.downloads.is_dir():
            for entry in self.downloads.iterdir():
                if keep_partial and entry.suffix == PARTIAL_SUFFIX:
                    continue
                entry.unlink()
