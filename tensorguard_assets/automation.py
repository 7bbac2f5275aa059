"""Schedules and sensors: site registration and scheduled, partitioned retraining."""


import hashlib
import json

from dagster import (
    AddDynamicPartitionsRequest,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from tensorguard.errors import TensorGuardError
from tensorguard_assets.jobs import site_training_job
from tensorguard_assets.partitions import (
    ROUND_CADENCE,
    ROUND_SCHEDULE_CRON,
    round_partitions,
    round_site_key,
    site_partitions,
)
from tensorguard_resources import SiteRegistry

SITES_PARTITION_NAME = site_partitions.name or "sites"


def _registry_fingerprint(site_ids: list[str]) -> str:
    return hashlib.sha256(json.dumps(sorted(site_ids)).encode()).hexdigest()


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description=(
        "Keeps the `sites` dynamic partitions equal to the site registry (TG_SITES_FILE or "
        "the demo sites): adds newly registered sites, removes deregistered ones."
    ),
)
def site_registry_sensor(
    context: SensorEvaluationContext, sites: SiteRegistry
) -> SensorResult | SkipReason:
    """Add and remove site partitions when the registry changes (cursor: its digest)."""
    try:
        registered = sorted(sites.sites())
    except TensorGuardError as exc:
        return SkipReason(f"site registry unreadable, partitions left unchanged: {exc}")
    fingerprint = _registry_fingerprint(registered)
    if context.cursor == fingerprint:
        return SkipReason("site registry unchanged")
    existing = set(context.instance.get_dynamic_partitions(SITES_PARTITION_NAME))
    added = [site for site in registered if site not in existing]
    removed = sorted(existing - set(registered))
    requests: list[AddDynamicPartitionsRequest | DeleteDynamicPartitionsRequest] = []
    if added:
        requests.append(site_partitions.build_add_request(added))
    if removed:
        requests.append(site_partitions.build_delete_request(removed))
    context.log.info(f"site registry: +{added or '[]'} -{removed or '[]'}")
    return SensorResult(dynamic_partitions_requests=requests, cursor=fingerprint)


@schedule(
    job=site_training_job,
    cron_schedule=ROUND_SCHEDULE_CRON[ROUND_CADENCE],
    default_status=DefaultScheduleStatus.STOPPED,
    description="Launches every registered site's training for the round that just closed.",
)
def round_training_schedule(context: ScheduleEvaluationContext) -> list[RunRequest] | SkipReason:
    """One run request per registered site for the latest complete round."""
    window = round_partitions.get_prev_partition_window(context.scheduled_execution_time)
    if window is None:
        return SkipReason("no complete round window yet")
    round_key = round_partitions.get_partition_key_for_timestamp(window.start.timestamp())
    site_ids = sorted(context.instance.get_dynamic_partitions(SITES_PARTITION_NAME))
    if not site_ids:
        return SkipReason("no site registered yet (see the site_registry_sensor)")
    return [
        RunRequest(
            run_key=f"{round_key}|{site_id}",
            partition_key=round_site_key(round_key, site_id),
        )
        for site_id in site_ids
    ]
