"""Several rounds in a row: each round starts from the previous round's global adapter,
and the global adapter's held-out loss goes down round over round.

The rounds run as real Dagster runs through each party's code location, as ``make
demo --rounds N`` does, up to the custodian's decryption (the release stages are
covered by the full-round tests); the held-out loss is measured here on the union of
the demo sites' ``eval.jsonl``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import instance_for_test

from tensorguard.held_out import load_held_out_set, load_with_adapter
from tensorguard.sites import demo_site_registry
from tensorguard_assets.locations import ROUND_RELEASE_JOBS, ROUND_SETUP_JOBS
from tensorguard_assets.partitions import round_site_key, site_partitions
from tests.e2e.conftest import unique_fleet
from tests.e2e.rounds import (
    ROUND_OPEN_JOB,
    SETUP_JOB,
    SITE_TRAINING_JOB,
    asset_metadata,
    base_model_config,
    development_process_env,
    failed_stages,
    pipeline_definitions,
    run_release,
    run_stage,
    tensorguard_env,
)

pytestmark = pytest.mark.slow

ROUNDS = ("2026-11-10", "2026-11-11", "2026-11-12")
LOCAL_STEPS = 8
TRAINING = {"ops": {"site_adapter": {"config": {"steps": LOCAL_STEPS}}}}


def test_three_rounds_each_start_from_the_last_and_improve(
    tmp_path: Path, prebuilt_base_model: Path, demo_sites: list[str]
) -> None:
    env = tensorguard_env(tmp_path, fleet=unique_fleet("e2e-rounds"))
    definitions = pipeline_definitions(env)
    registry = demo_site_registry()
    held_out = load_held_out_set(prebuilt_base_model, {s: registry[s].data_dir for s in demo_sites})
    losses: list[float] = []
    origins: list[str] = []
    with development_process_env(), instance_for_test() as instance:
        assert site_partitions.name is not None
        instance.add_dynamic_partitions(site_partitions.name, demo_sites)
        for job in ROUND_SETUP_JOBS:
            config = base_model_config(prebuilt_base_model) if job == SETUP_JOB else None
            setup = run_stage(definitions, instance, job, run_config=config)
            assert setup.success, setup.failure_messages()
        for round_key in ROUNDS:
            stages = {ROUND_OPEN_JOB: run_stage(definitions, instance, ROUND_OPEN_JOB, round_key)}
            for site in demo_sites:
                stages[site] = run_stage(
                    definitions,
                    instance,
                    SITE_TRAINING_JOB,
                    round_site_key(round_key, site),
                    run_config=TRAINING,
                )
            stages |= run_release(
                definitions, instance, round_key, jobs=ROUND_RELEASE_JOBS[:-1]
            ).runs
            assert all(run.success for run in stages.values()), failed_stages(stages)
            origins.append(str(asset_metadata(stages, "round_spec")["reference_origin"]))
            adapter = Path(str(asset_metadata(stages, "global_adapter")["path"]))
            losses.append(held_out.loss(load_with_adapter(prebuilt_base_model, adapter)))
    print(f"held-out loss per round ({LOCAL_STEPS} local steps): {losses}")
    assert origins[0].startswith("seeded initial adapter")
    for previous, origin in zip(ROUNDS, origins[1:], strict=False):
        assert f"global_adapter/{previous}/" in origin
    assert losses[0] > losses[1] > losses[2]
