"""The one Dagster ``Definitions`` object of TensorGuard (loaded by workspace.yaml)."""

from dagster import Definitions

from tensorguard_assets.automation import (
    round_open_schedule,
    round_progress_sensor,
    site_registry_sensor,
)
from tensorguard_assets.deployment import moai_export, onnx_model, pruned_model, tensorrt_engine
from tensorguard_assets.executors import select_executor
from tensorguard_assets.federation import (
    aggregated_update,
    federation_keys,
    global_adapter,
    round_spec,
    seed_reveals,
    site_update,
)
from tensorguard_assets.jobs import ALL_JOBS
from tensorguard_assets.release import evaluation_report, gate_decision, release, tgsp_package
from tensorguard_assets.resources import build_resources
from tensorguard_assets.training import base_model, site_adapter, site_dataset

defs = Definitions(
    assets=[
        base_model,
        federation_keys,
        round_spec,
        site_dataset,
        site_adapter,
        site_update,
        aggregated_update,
        global_adapter,
        seed_reveals,
        pruned_model,
        onnx_model,
        tensorrt_engine,
        moai_export,
        evaluation_report,
        gate_decision,
        tgsp_package,
        release,
    ],
    jobs=ALL_JOBS,
    schedules=[round_open_schedule],
    sensors=[site_registry_sensor, round_progress_sensor],
    resources=build_resources(),
    executor=select_executor(),
)
