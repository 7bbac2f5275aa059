"""The runtime resource: production gates and determinism, checked when a run starts."""

from __future__ import annotations

from dagster import ConfigurableResource, InitResourceContext

from tensorguard.crypto import enforce_pqc_requirement
from tensorguard.errors import ProductionGateError, TensorGuardError
from tensorguard.preflight import LOCATION_PARTIES, run_preflight
from tensorguard.production import Environment, current_environment, enforce_production_gates
from tensorguard.training.determinism import determinism_requested, enable_determinism
from tensorguard_resources.failures import fail_closed

# Runs whose environment this process has already reported: the runtime is nested in
# several resources, so one step may set it up more than once.
_REPORTED_RUNS: set[str] = set()


def location_preflight(context: InitResourceContext) -> bool:
    """Run the preflight of the party whose code location launched this run (production);
    raise :class:`ProductionGateError` listing every problem in one message.

    Returns False, checking nothing, for a run without a TensorGuard code location:
    in-process runs (tests, ``make demo``) rely on :func:`enforce_production_gates`.
    Runs launched from workspace.yaml (daemon, UI, ``dagster job launch``) know theirs.
    """
    run = context.dagster_run
    origin = run.remote_job_origin if run is not None else None
    party = LOCATION_PARTIES.get(origin.location_name) if origin is not None else None
    if party is None:
        return False
    report = run_preflight((party,))
    if not report.ok:
        raise ProductionGateError(report.failure_message())
    return True


class TensorGuardRuntime(ConfigurableResource):
    """Checks the environment before any TensorGuard step runs.

    In production (``TG_ENVIRONMENT=production``) every required secret and a working
    post-quantum backend must be present, and a run launched from a code location must
    pass that party's preflight (:mod:`tensorguard.preflight`: keys, sites, broker,
    databases); otherwise the run fails without retries and one message lists every
    problem and how to fix it. With
    ``TG_PQC_REQUIRED=true`` the PQC backend's self-test must pass in any environment. With
    ``TG_DETERMINISTIC=true`` the run seeds Python, NumPy and torch and logs the seed
    and library versions (cryptographic randomness is never seeded).

    Assets do not take it directly: it is nested in the resources every asset uses
    (the artifact store, the fleet), whose set-up runs these checks first. The checks
    run at every set-up; the log lines and seeding happen once per run and process.
    """

    seed: int = 0

    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Enforce production gates and, when requested, determinism."""
        try:
            environment = current_environment()
            if environment is not Environment.PRODUCTION or not location_preflight(context):
                environment = enforce_production_gates()
            pqc_backend = enforce_pqc_requirement()
            deterministic = determinism_requested()
        except TensorGuardError as exc:
            raise fail_closed(exc, step="production gate") from None
        run_id = context.run.run_id if context.run is not None else ""
        if run_id and run_id in _REPORTED_RUNS:
            return
        _REPORTED_RUNS.add(run_id)
        log = context.log
        if log is not None:
            log.info(f"TensorGuard environment: {environment.value}")
            if pqc_backend is not None:
                log.info(f"TG_PQC_REQUIRED: {pqc_backend.name} backend passed its self-test")
            if environment is Environment.DEVELOPMENT:
                log.warning(
                    "DEVELOPMENT MODE: throwaway keys may be generated; never use this "
                    "mode for a real federation (set TG_ENVIRONMENT=production)"
                )
        if deterministic:
            report = enable_determinism(self.seed)
            if log is not None:
                log.info(f"TG_DETERMINISTIC=true: {report.describe()}")

    @property
    def environment(self) -> Environment:
        """The environment in force (development unless configured otherwise)."""
        return enforce_production_gates()
