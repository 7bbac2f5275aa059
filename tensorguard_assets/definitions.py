"""The one Dagster ``Definitions`` object of TensorGuard (loaded by workspace.yaml)."""

from __future__ import annotations

from dagster import Definitions

from tensorguard_assets.automation import round_training_schedule, site_registry_sensor
from tensorguard_assets.jobs import ALL_JOBS
from tensorguard_assets.resources import build_resources
from tensorguard_assets.training import base_model, site_adapter, site_dataset

defs = Definitions(
    assets=[base_model, site_dataset, site_adapter],
    jobs=ALL_JOBS,
    schedules=[round_training_schedule],
    sensors=[site_registry_sensor],
    resources=build_resources(),
)
