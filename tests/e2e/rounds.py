"""Run federated rounds as real Dagster runs, with resources built from a test's own env.

``run_full_round`` launches the stages the way ``make demo`` does (set-up and key
ceremony, round opening, each site's training, then aggregation, seed reveals,
decryption and release, each job through its own party's code location), but binds
TensorGuard's assets and jobs to resources built from an explicit ``TG_*`` mapping, so
every artifact, key, registry and database of a test lives in its own temp dir.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    ExecuteInProcessResult,
    MultiPartitionKey,
)

from tensorguard_assets.locations import ROUND_RELEASE_JOBS, ROUND_SETUP_JOBS, Federation
from tensorguard_assets.partitions import round_site_key, site_partitions
from tests.asset_graph import round_asset_names as round_asset_names  # re-exported
from tests.round_start import TEST_ROUND_START
from tests.services.mosquitto import MosquittoBroker

SETUP_JOB = "setup_job"
KEY_CEREMONY_JOB = "key_ceremony_job"
ROUND_OPEN_JOB = "round_open_job"
SITE_TRAINING_JOB = "site_training_job"
AGGREGATION_JOB = "aggregation_job"
ROUND_RELEASE_JOB = "round_release_job"
QUIET_LOGS: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
PROCESS_ENV_PREFIXES = ("TG_",)
PROCESS_ENV_NAMES = ("DATABASE_URL", "DAGSTER_HOME")


@dataclass(frozen=True)
class StageRun:
    """One Dagster run of a round: the job, its partition, its result and duration."""

    job_name: str
    partition_key: str | None
    result: ExecuteInProcessResult
    seconds: float

    @property
    def success(self) -> bool:
        """True when the run succeeded."""
        return self.result.success

    @property
    def run_id(self) -> str:
        """The Dagster run id."""
        return self.result.run_id

    def materializations(self, asset_name: str) -> list[AssetMaterialization]:
        """Materialisations of ``asset_name`` in this run."""
        return [
            event.materialization
            for event in self.result.get_asset_materialization_events()
            if event.asset_key == AssetKey(asset_name)
        ]

    def metadata(self, asset_name: str) -> dict[str, Any]:
        """Metadata values of this run's one materialisation of ``asset_name``."""
        [materialization] = self.materializations(asset_name)
        return {name: value.value for name, value in materialization.metadata.items()}

    def materialized_assets(self) -> set[str]:
        """Names of every asset this run materialised."""
        return {
            event.asset_key.to_user_string()
            for event in self.result.get_asset_materialization_events()
            if event.asset_key is not None
        }

    def check_results(self) -> dict[str, bool]:
        """Each asset check evaluated in this run (``<asset>.<check>``) and whether it passed."""
        return {
            f"{evaluation.asset_key.to_user_string()}.{evaluation.check_name}": evaluation.passed
            for evaluation in self.result.get_asset_check_evaluations()
        }

    def failed_steps(self) -> list[str]:
        """Keys of the steps that failed in this run."""
        return [str(event.step_key) for event in self.result.all_events if event.is_step_failure]

    def failure_messages(self) -> str:
        """Every step failure's message and cause, one per line (empty when none)."""
        lines = []
        for event in self.result.all_events:
            if not event.is_step_failure:
                continue
            error = event.step_failure_data.error
            if error is not None:
                lines.append(f"{event.step_key}: {error.to_string()}")
        return "\n".join(lines)


@dataclass(frozen=True)
class RunGroup:
    """Consecutive runs of one round (e.g. aggregation through release), read as one."""

    runs: dict[str, StageRun]

    @property
    def success(self) -> bool:
        """True when every run succeeded."""
        return all(run.success for run in self.runs.values())

    def run_ids(self) -> set[str]:
        """The Dagster run ids of the group."""
        return {run.run_id for run in self.runs.values()}

    def metadata(self, asset_name: str) -> dict[str, Any]:
        """Metadata of the one materialisation of ``asset_name`` in the group."""
        [run] = [run for run in self.runs.values() if run.materializations(asset_name)]
        return run.metadata(asset_name)

    def materialized_assets(self) -> set[str]:
        """Names of every asset the group's runs materialised."""
        return {name for run in self.runs.values() for name in run.materialized_assets()}

    def check_results(self) -> dict[str, bool]:
        """Every asset check evaluated in the group's runs and whether it passed."""
        return {name: ok for run in self.runs.values() for name, ok in run.check_results().items()}

    def failure_messages(self) -> str:
        """Every step failure of the group's runs, one per line."""
        return "\n".join(filter(None, (run.failure_messages() for run in self.runs.values())))


def pipeline_definitions(env: Mapping[str, str]) -> Federation:
    """TensorGuard's code locations, each bound to its resources built from ``env``."""
    return Federation(env)


def run_stage(
    definitions: Federation,
    instance: DagsterInstance,
    job_name: str,
    partition_key: str | MultiPartitionKey | None = None,
    *,
    run_config: Mapping[str, Any] | None = None,
    asset_selection: Sequence[str] | None = None,
) -> StageRun:
    """Execute one job in process; a failed run is returned, not raised."""
    started = time.perf_counter()
    result = definitions.resolve_job_def(job_name).execute_in_process(
        instance=instance,
        partition_key=partition_key,
        run_config={**QUIET_LOGS, **(run_config or {})},
        asset_selection=[AssetKey(name) for name in asset_selection] if asset_selection else None,
        raise_on_error=False,
    )
    key = None if partition_key is None else str(partition_key)
    return StageRun(job_name, key, result, time.perf_counter() - started)


def site_stage(site_id: str) -> str:
    """Label of a site's training run in :func:`run_full_round`'s result."""
    return f"{SITE_TRAINING_JOB}[{site_id}]"


def start_round(
    definitions: Federation,
    instance: DagsterInstance,
    round_key: str,
    *,
    registered_sites: Sequence[str],
    trained_sites: Sequence[str],
    run_config: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, StageRun]:
    """Register the sites as partitions, run set-up and the key ceremony, open the round
    and train ``trained_sites`` in turn; stop at the first failed run."""
    configs = run_config or {}
    assert site_partitions.name is not None
    instance.add_dynamic_partitions(site_partitions.name, list(registered_sites))
    stages: dict[str, StageRun] = {}
    plan: list[tuple[str, str, str | MultiPartitionKey | None]] = [
        *((job, job, None) for job in ROUND_SETUP_JOBS),
        (ROUND_OPEN_JOB, ROUND_OPEN_JOB, round_key),
    ]
    plan += [
        (site_stage(site), SITE_TRAINING_JOB, round_site_key(round_key, site))
        for site in trained_sites
    ]
    for label, job_name, partition_key in plan:
        run = run_stage(
            definitions, instance, job_name, partition_key, run_config=configs.get(job_name)
        )
        stages[label] = run
        if not run.success:
            break
    return stages


def run_full_round(
    instance: DagsterInstance,
    env: Mapping[str, str],
    round_key: str,
    site_ids: Sequence[str],
    *,
    run_config: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, StageRun]:
    """Run a whole round (set-up, opening, each site, aggregation to release) as
    separate Dagster runs.

    ``run_config`` maps a job name to that job's run config (e.g. a gate policy for
    ``round_release_job``). Stops at the first failed run; the result maps each stage
    that ran (its job name, or ``site_training_job[<site>]``) to its :class:`StageRun`.
    """
    definitions = pipeline_definitions(env)
    stages = start_round(
        definitions,
        instance,
        round_key,
        registered_sites=site_ids,
        trained_sites=site_ids,
        run_config=run_config,
    )
    if all(run.success for run in stages.values()):
        stages |= run_release(definitions, instance, round_key, run_config=run_config).runs
    return stages


def run_release(
    definitions: Federation,
    instance: DagsterInstance,
    round_key: str,
    *,
    run_config: Mapping[str, Mapping[str, Any]] | None = None,
    jobs: Sequence[str] = ROUND_RELEASE_JOBS,
) -> RunGroup:
    """Run the round's jobs after training (aggregation, reveals, decryption, release, or
    the first ``jobs``), each by its own location; stop at the first failed run."""
    runs: dict[str, StageRun] = {}
    for job_name in jobs:
        run = run_stage(
            definitions, instance, job_name, round_key, run_config=(run_config or {}).get(job_name)
        )
        runs[job_name] = run
        if not run.success:
            break
    return RunGroup(runs)


def asset_metadata(stages: Mapping[str, StageRun], asset_name: str) -> dict[str, Any]:
    """Metadata of the one run in ``stages`` that materialised ``asset_name``."""
    return RunGroup(dict(stages)).metadata(asset_name)


def failed_stages(stages: Mapping[str, StageRun]) -> str:
    """A readable account of the failed runs, for assertion messages."""
    return "\n".join(
        f"{name} failed:\n{run.failure_messages()}"
        for name, run in stages.items()
        if not run.success
    )


def tensorguard_env(
    state_dir: Path, *, fleet: str, broker: MosquittoBroker | None = None
) -> dict[str, str]:
    """``TG_*`` settings that keep every artifact, key, registry and database under
    ``state_dir`` (the layout ``build_resources`` derives from ``TG_ARTIFACT_ROOT``), with
    the session's first round partition (processes it starts compute their own)."""
    env = {
        "TG_ARTIFACT_ROOT": str(state_dir / "artifacts"),
        "TG_FLEET": fleet,
        "TG_ROUND_START": TEST_ROUND_START,
    }
    if broker is not None:
        env |= {"TG_MQTT_HOST": broker.host, "TG_MQTT_PORT": str(broker.port)}
    return env


def base_model_config(model_dir: Path) -> dict[str, Any]:
    """``setup_job`` run config that takes the base model from a local HF directory."""
    return {"ops": {"base_model": {"config": {"model_dir": str(model_dir)}}}}


@contextmanager
def development_process_env() -> Iterator[None]:
    """Clear the process's ``TG_*``, ``DATABASE_URL`` and ``DAGSTER_HOME`` while a
    module-scoped fixture runs (the autouse per-test cleaner is not active yet)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith(PROCESS_ENV_PREFIXES) or name in PROCESS_ENV_NAMES:
                patch.delenv(name)
        yield
