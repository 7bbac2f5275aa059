"""The site registry resource: a YAML file, or the shipped demo sites by default."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from tensorguard.sites import SiteRecord, demo_site_registry, load_site_registry, lookup_site
from tensorguard_resources.settings import resolved


class SiteRegistry(ConfigurableResource):
    """Registered client sites. ``sites_file`` empty means the shipped demo sites."""

    sites_file: str = ""

    def sites(self) -> dict[str, SiteRecord]:
        """All registered sites, by id."""
        sites_file = resolved(self.sites_file, "SiteRegistry.sites_file")
        if sites_file:
            return load_site_registry(Path(sites_file))
        return demo_site_registry()

    def site(self, site_id: str) -> SiteRecord:
        """One registered site; unknown ids raise an error listing the known ones."""
        return lookup_site(self.sites(), site_id)
