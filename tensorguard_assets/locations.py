"""TensorGuard's Dagster code locations: one per party, each given only its own secrets.

A federation has three parties that must not share secrets (docs/KEYS.md, "Parties"),
so the pipeline is three code locations (workspace.yaml), each a separate process with
its own environment in production:

- ``tensorguard`` — the coordinator, the sites and the publisher: base model, round spec,
  site training and updates, seed reveals, derived artifacts, gate, package, release.
  Vaults: ``site_keys``, ``release_keys``.
- ``tensorguard-aggregator`` — the homomorphic sum. No vault at all: it reads public keys
  and signed envelopes only.
- ``tensorguard-custodian`` — the CKKS key ceremony and the one decryption per round.
  Vault: ``custodian_keys``.

Each location is given exactly the resources its assets and sensors declare, so a
location cannot open another party's vault even by mistake (tests/assets/
test_key_parties.py). The locations share one Dagster instance; a sensor in each
launches that location's stages when the previous party's asset is materialised
(``tensorguard_assets.automation``). :class:`Federation` builds all three from one
environment for the development tools (``make demo``, ``check_round``, tests), which
run every stage in one process but still each through its own location's resources.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Definitions,
    JobDefinition,
    LoggerDefinition,
    ScheduleDefinition,
    SensorDefinition,
)

from tensorguard_assets import (
    automation,
    canary,
    deployment,
    federation,
    identity,
    jobs,
    release,
    training,
)
from tensorguard_assets.artifact_inputs import with_upstream_specs
from tensorguard_assets.executors import select_executor
from tensorguard_assets.resources import build_resources

DAGSTER_BUILT_IN_RESOURCES = frozenset({"io_manager"})


@dataclass(frozen=True)
class CodeLocation:
    """One Dagster code location: the assets, jobs and automation one party runs."""

    name: str
    party: str
    assets: tuple[AssetsDefinition, ...]
    jobs: tuple[Any, ...]  # asset jobs (dagster does not export their class)
    sensors: tuple[SensorDefinition, ...] = ()
    schedules: tuple[ScheduleDefinition, ...] = ()

    def resource_keys(self) -> frozenset[str]:
        """Every resource the location's assets and sensors declare (nothing more)."""
        declared: set[str] = set()
        for asset in self.assets:
            declared |= set(asset.required_resource_keys)
        for sensor in self.sensors:
            declared |= set(sensor.required_resource_keys)
        return frozenset(declared - DAGSTER_BUILT_IN_RESOURCES)

    def job_names(self) -> frozenset[str]:
        """Names of the location's jobs."""
        return frozenset(job.name for job in self.jobs)

    def resources(self, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The location's resources, built from ``environ``; without it (a deployment)
        from ``os.environ`` as :class:`~dagster.EnvVar` references resolved at run start
        (:func:`~tensorguard_assets.resources.build_resources`)."""
        every = build_resources(environ)
        return {name: every[name] for name in sorted(self.resource_keys())}

    def definitions(
        self,
        environ: Mapping[str, str] | None = None,
        loggers: Mapping[str, LoggerDefinition] | None = None,
    ) -> Definitions:
        """The location's ``Definitions`` with resources built from ``environ`` (see
        :meth:`resources`; the executor is chosen from it, or ``os.environ``, at load) and,
        for a tool's in-process runs, its own ``loggers`` instead of Dagster's console one."""
        return Definitions(
            # the upstream artifacts another party's location materialises, as external
            # assets: this location's assets load them as inputs
            assets=with_upstream_specs(self.assets, every_asset()),
            jobs=list(self.jobs),
            sensors=list(self.sensors),
            schedules=list(self.schedules),
            resources=self.resources(environ),
            executor=select_executor(environ),
            loggers=dict(loggers) if loggers else None,
        )


COORDINATOR = CodeLocation(
    name="tensorguard",
    party="coordinator, sites, publisher",
    assets=(
        training.base_model,
        federation.round_spec,
        training.site_dataset,
        training.site_adapter,
        federation.site_update,
        federation.seed_reveals,
        deployment.pruned_model,
        deployment.onnx_model,
        deployment.tensorrt_engine,
        deployment.moai_export,
        release.evaluation_report,
        release.gate_decision,
        release.tgsp_package,
        release.release,
        canary.canary_rollout,
        identity.certificate_renewals,
        identity.certificate_inventory,
    ),
    jobs=(
        jobs.setup_job,
        jobs.round_open_job,
        jobs.site_training_job,
        jobs.reveal_job,
        jobs.round_release_job,
        jobs.gpu_export_job,
        canary.canary_rollout_job,
        identity.certificate_renewal_job,
    ),
    sensors=(
        automation.site_registry_sensor,
        automation.round_progress_sensor,
        canary.canary_rollout_sensor,
    ),
    schedules=(automation.round_open_schedule, identity.certificate_renewal_schedule),
)

AGGREGATOR = CodeLocation(
    name="tensorguard-aggregator",
    party="aggregator",
    assets=(federation.aggregated_update,),
    jobs=(jobs.aggregation_job,),
    sensors=(automation.aggregation_sensor,),
)

CUSTODIAN = CodeLocation(
    name="tensorguard-custodian",
    party="custodian",
    assets=(federation.federation_keys, federation.global_adapter),
    jobs=(jobs.key_ceremony_job, jobs.decryption_job),
    sensors=(automation.decryption_sensor,),
)

LOCATIONS: tuple[CodeLocation, ...] = (COORDINATOR, AGGREGATOR, CUSTODIAN)


def every_asset() -> list[AssetsDefinition]:
    """The assets of every code location."""
    return [asset for location in LOCATIONS for asset in location.assets]


def runnable_assets(assets: list[AssetsDefinition]) -> list[AssetsDefinition | AssetSpec]:
    """``assets`` with their upstream assets from any location as external assets: what
    a run of just ``assets`` (a test's ``materialize``) needs to load their inputs."""
    return with_upstream_specs(assets, every_asset())


ROUND_SETUP_JOBS = (jobs.setup_job.name, jobs.key_ceremony_job.name)
"""Unpartitioned runs before the first round (and after a key rotation)."""

ROUND_RELEASE_JOBS = (
    jobs.aggregation_job.name,
    jobs.reveal_job.name,
    jobs.decryption_job.name,
    jobs.round_release_job.name,
)
"""A round's runs after its sites' training, in order, each by its own party."""


def location_of_job(job_name: str) -> CodeLocation:
    """The code location that runs ``job_name``."""
    for location in LOCATIONS:
        if job_name in location.job_names():
            return location
    raise KeyError(f"no TensorGuard code location defines a job named {job_name!r}")


class Federation:
    """The three code locations' ``Definitions``, built from one environment.

    For the tools that drive a whole round in one process (``make demo``,
    ``check_round``, tests): each job still runs with only its own location's resources.
    Without ``environ`` (``make demo``) the resources are built as a deployment builds
    them, with ``EnvVar`` references that each run resolves from ``os.environ``; with
    ``environ`` (tests) they hold its literal values.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        loggers: Mapping[str, LoggerDefinition] | None = None,
    ) -> None:
        self.locations: dict[str, Definitions] = {
            location.name: location.definitions(environ, loggers) for location in LOCATIONS
        }

    def resolve_job_def(self, job_name: str) -> JobDefinition:
        """The job ``job_name`` bound to its own location's resources."""
        return self.locations[location_of_job(job_name).name].resolve_job_def(job_name)

    def asset_keys(self) -> set[AssetKey]:
        """Every asset key that some location materialises."""
        return {key for location in LOCATIONS for asset in location.assets for key in asset.keys}


def all_in_one_definitions(environ: Mapping[str, str] | None = None) -> Definitions:
    """Every asset, job and sensor in one ``Definitions`` (for reading the whole asset
    graph, e.g. ``check_round``); its resources hold every party's vault, so no
    deployment should load it as a code location."""
    return Definitions(
        assets=every_asset(),
        jobs=[job for location in LOCATIONS for job in location.jobs],
        sensors=[sensor for location in LOCATIONS for sensor in location.sensors],
        schedules=[schedule for location in LOCATIONS for schedule in location.schedules],
        resources=build_resources(environ),
        executor=select_executor(environ),
    )
