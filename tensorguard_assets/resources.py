"""Resources for each environment, chosen in one place from ``TG_*`` variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from tensorguard_resources import ArtifactStore, SiteRegistry, TensorGuardRuntime

DEFAULT_ARTIFACT_ROOT = ".tensorguard/artifacts"


def build_resources(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The resource instances the assets use.

    ``TG_ARTIFACT_ROOT`` (default ``.tensorguard/artifacts`` under the working directory)
    is where artifacts live; ``TG_SITES_FILE`` names the site registry (default: the
    shipped demo sites). Secrets are not read here: resources validate them when a run
    starts, so the definitions load anywhere.
    """
    env = os.environ if environ is None else environ
    return {
        "runtime": TensorGuardRuntime(seed=int(env.get("TG_SEED", "0"))),
        "artifacts": ArtifactStore(base_uri=env.get("TG_ARTIFACT_ROOT", DEFAULT_ARTIFACT_ROOT)),
        "sites": SiteRegistry(sites_file=env.get("TG_SITES_FILE", "")),
    }
