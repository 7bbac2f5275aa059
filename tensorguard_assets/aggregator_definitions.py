"""The aggregator's own ``Definitions``: ``aggregated_update`` alone, with resources that
hold no key vault, for running the aggregator as its own process or code location.

The aggregator holds no secret of any kind (docs/KEYS.md): it reads the public
federation context, the signed site envelopes and the sites' public keys, and writes the
homomorphic sum. Its upstream assets (``site_update``, ``round_spec``,
``federation_keys``) are external here; their materialisations come from the shared
Dagster instance. ``Definitions.validate_loadable`` on this object fails if
``aggregated_update`` ever asks for a resource the aggregator is not given, such as a
key vault. workspace.yaml still loads the round from the main location
(``tensorguard_assets.definitions``), which also defines ``aggregated_update`` so that
``round_release_job`` runs the round in one go; moving the asset out of the main
location is the next step (docs/OPERATIONS.md, "Separate parties").
"""

import os
from collections.abc import Mapping
from typing import Any

from dagster import AssetSelection, Definitions, define_asset_job

from tensorguard_assets.executors import select_executor
from tensorguard_assets.federation import aggregated_update
from tensorguard_assets.partitions import round_partitions
from tensorguard_assets.resources import build_resources

AGGREGATOR_RESOURCE_KEYS = ("artifacts", "sites")
"""Everything the aggregator is given: where artifacts live and the site registry."""


def build_aggregator_resources(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The aggregator's resources: the artifact store and the site registry, no vault."""
    resources = build_resources(os.environ if environ is None else environ)
    return {name: resources[name] for name in AGGREGATOR_RESOURCE_KEYS}


aggregation_job = define_asset_job(
    "aggregation_job",
    selection=AssetSelection.assets("aggregated_update"),
    partitions_def=round_partitions,
    description="Aggregate a round's signed, encrypted site updates (no secret needed).",
)

defs = Definitions(
    assets=[aggregated_update],
    jobs=[aggregation_job],
    resources=build_aggregator_resources(),
    executor=select_executor(),
)
