"""The telemetry-gated canary rollout in Dagster: a sensor that watches open rollouts and
the ``canary_rollout`` asset that promotes or rolls back a release.

The ``release`` asset starts a rollout when the gate policy has a ``canary`` section
(:mod:`tensorguard.release_canary`). Every minute :func:`canary_rollout_sensor` reads
each open rollout's cohort telemetry from the application DB and asks the core for a
verdict (:func:`tensorguard.fleet.rollout.decide_rollout`); ``promote`` (once a rollout
that needs it has a verified signed deployment approval) or ``rollback`` launches one run
of ``canary_rollout_job`` for that release (again after :data:`RETRY_BUCKET_S` if it
failed). The asset decides again
(the core, not the sensor, is the authority), applies the verdict and records it: a
materialisation with the verdict, reasons and cohort, and the ``canary_healthy`` check
(failed for a rollback). The DB row, the audit log and the signed rollout log are
written by the core.
"""

# No "from __future__ import annotations": Dagster resolves config and resource
# parameter types from the runtime annotations.

import time
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    Config,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    RunConfig,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)
from pydantic import Field

from tensorguard.errors import ConfigurationError, TensorGuardError
from tensorguard.fleet.canary import CanaryVerdict
from tensorguard.fleet.notify import announcement_for
from tensorguard.fleet.rollout import (
    Rollout,
    RolloutError,
    RolloutLog,
    decide_rollout,
    open_rollouts,
    promote,
    roll_back,
    rollout_of,
)
from tensorguard.service.approvals import ApprovalStore
from tensorguard_assets import groups
from tensorguard_resources import fail_closed_on
from tensorguard_resources.fleet import FleetResource
from tensorguard_resources.keys import KeyVault

DEFAULT_TELEMETRY_WINDOW_S = 900
ROLLOUT_LOG_FILE = "rollout-log.jsonl"
RETRY_BUCKET_S = 300
"""A rollout whose run failed is launched again at most once per this many seconds."""


class RolloutConfig(Config):
    """Which release's rollout to decide."""

    channel: str = Field(description="The release channel.")
    version: int = Field(ge=1, description="The release version in its canary stage.")
    telemetry_window_s: int = Field(
        default=DEFAULT_TELEMETRY_WINDOW_S,
        gt=0,
        description="How far back telemetry counts (as TG_TELEMETRY_WINDOW_S).",
    )


def rollout_log(fleet: FleetResource, release_keys: KeyVault) -> RolloutLog:
    """The signed rollout log beside the registry, checked with the release key."""
    key = release_keys.provider.signer_for(fleet.release_key_name).public_key()
    return RolloutLog(Path(fleet.registry_root) / ROLLOUT_LOG_FILE, key)


def _metadata(rollout: Rollout, verdict: str, reasons: tuple[str, ...]) -> dict[str, MetadataValue]:
    return {
        "channel": MetadataValue.text(rollout.channel),
        "version": MetadataValue.int(rollout.version),
        "previous_version": MetadataValue.int(rollout.previous_version or 0),
        "verdict": MetadataValue.text(verdict),
        "status": MetadataValue.text(rollout.status),
        "reasons": MetadataValue.md("\n".join(f"- {reason}" for reason in reasons)),
        "canary_nodes": MetadataValue.json(list(rollout.canary_nodes)),
        "policy_digest": MetadataValue.text(rollout.policy_digest),
        "approval_required": MetadataValue.bool(rollout.approval_required),
    }


@asset(
    group_name=groups.PUBLISH,
    deps=["release"],
    kinds={"mqtt", "sqlite"},
    owners=["team:release"],
    check_specs=[
        AssetCheckSpec(
            name="canary_healthy",
            asset="canary_rollout",
            description="The canary cohort's telemetry met the policy (failed: rolled back).",
        )
    ],
)
def canary_rollout(
    context: AssetExecutionContext,
    config: RolloutConfig,
    fleet: FleetResource,
    release_keys: KeyVault,
) -> MaterializeResult:
    """A release's canary stage decided from its cohort's telemetry: promoted to the whole
    channel, or rolled back (revoked in the registry; the canary nodes reinstall the
    previous release on a rollback order signed with the release key)."""
    actor = f"dagster:{context.run.run_id}"
    with fail_closed_on(context):
        mqtt = fleet.mqtt
        if mqtt is None:
            raise ConfigurationError(
                "a canary rollout is promoted or rolled back over MQTT; set TG_MQTT_HOST"
            )
        signer = release_keys.provider.signer_for(fleet.release_key_name)
        log = rollout_log(fleet, release_keys)
        registry = fleet.registry
        database = fleet.database()
        try:
            rollout = rollout_of(database, fleet.fleet, config.channel, config.version)
            decision = decide_rollout(
                database, rollout, telemetry_window_s=config.telemetry_window_s
            )
            verdict = decision.verdict
            if verdict is CanaryVerdict.WAIT or rollout.status != "canary":
                done = rollout.status != "canary"
                note = f"already {rollout.status}" if done else "the canary is still observed"
                context.log.info(f"{config.channel} v{config.version}: {note}")
                return MaterializeResult(
                    metadata=_metadata(rollout, verdict.value, decision.reasons),
                    check_results=[
                        AssetCheckResult(
                            asset_key=AssetKey("canary_rollout"),
                            check_name="canary_healthy",
                            passed=rollout.status != "rolled_back",
                            description=note,
                        )
                    ],
                )
            records = {r.version: r for r in registry.releases(config.channel)}
            if verdict is CanaryVerdict.PROMOTE:
                announcement = announcement_for(
                    registry,
                    records[rollout.version],
                    fleet.fleet,
                    service_url=fleet.service_url or None,
                )
                finished = promote(
                    database,
                    rollout,
                    decision.reasons,
                    announcement=announcement,
                    mqtt=mqtt,
                    log=log,
                    signer=signer,
                    actor=actor,
                )
            else:
                if rollout.previous_version not in records:
                    raise RolloutError(
                        f"v{rollout.previous_version}, the release to fall back to, is not "
                        "in the registry; restore the registry before rolling back"
                    )
                restore = announcement_for(
                    registry,
                    records[rollout.previous_version],
                    fleet.fleet,
                    service_url=fleet.service_url or None,
                )
                finished = roll_back(
                    database,
                    registry,
                    rollout,
                    decision.reasons,
                    restore=restore,
                    mqtt=mqtt,
                    log=log,
                    signer=signer,
                    actor=actor,
                )
        finally:
            database.close()
    for reason in finished.reasons:
        context.log.info(f"canary {finished.status}: {reason}")
    return MaterializeResult(
        metadata=_metadata(finished, verdict.value, finished.reasons),
        check_results=[
            AssetCheckResult(
                asset_key=AssetKey("canary_rollout"),
                check_name="canary_healthy",
                passed=finished.status == "promoted",
                severity=AssetCheckSeverity.WARN,
                description="; ".join(finished.reasons),
            )
        ],
    )


canary_rollout_job = define_asset_job(
    "canary_rollout_job",
    selection=[canary_rollout],
    description="Promote or roll back one release's canary stage (launched by the sensor).",
)


@sensor(
    jobs=[canary_rollout_job],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Reads each open canary rollout's cohort telemetry from the application DB and, "
        "when the gate policy's canary thresholds say promote or roll back, launches "
        "canary_rollout for that release."
    ),
)
def canary_rollout_sensor(
    context: SensorEvaluationContext, fleet: FleetResource
) -> list[RunRequest] | SkipReason:
    """One run request per open rollout whose verdict is no longer ``wait``."""
    try:
        database = fleet.database()
        try:
            requests = []
            for rollout in open_rollouts(database):
                if rollout.fleet != fleet.fleet:
                    continue
                decision = decide_rollout(
                    database, rollout, telemetry_window_s=DEFAULT_TELEMETRY_WINDOW_S
                )
                context.log.info(
                    f"{rollout.channel} v{rollout.version}: {decision.verdict.value} "
                    f"({'; '.join(decision.reasons)})"
                )
                if decision.verdict is CanaryVerdict.WAIT:
                    continue
                if decision.verdict is CanaryVerdict.PROMOTE and rollout.approval_required:
                    try:
                        ApprovalStore(database).require_approval(
                            rollout.fleet, rollout.channel, rollout.version
                        )
                    except TensorGuardError as exc:
                        context.log.warning(f"{rollout.channel} v{rollout.version}: {exc}")
                        continue
                # a failed run (broker down, ...) is retried in the next bucket
                bucket = int(time.time() // RETRY_BUCKET_S)
                requests.append(
                    RunRequest(
                        run_key=(
                            f"canary:{rollout.fleet}/{rollout.channel}/{rollout.version}:"
                            f"{decision.verdict.value}:{bucket}"
                        ),
                        job_name=canary_rollout_job.name,
                        run_config=RunConfig(
                            ops={
                                "canary_rollout": RolloutConfig(
                                    channel=rollout.channel, version=rollout.version
                                )
                            }
                        ),
                        tags={"tensorguard/canary_verdict": decision.verdict.value},
                    )
                )
        finally:
            database.close()
    except TensorGuardError as exc:
        return SkipReason(f"canary rollouts not evaluated: {exc}")
    return requests or SkipReason("no canary rollout is ready to promote or roll back")
