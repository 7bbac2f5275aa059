"""Schedules and sensors: site registration and scheduled, partitioned retraining."""

import hashlib
import json
from datetime import UTC, datetime

from dagster import (
    AddDynamicPartitionsRequest,
    AssetKey,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from tensorguard.errors import TensorGuardError
from tensorguard.federation import (
    MAX_TRAINING_ATTEMPTS,
    RoundStage,
    round_progress,
    training_attempt,
)
from tensorguard_assets.jobs import (
    aggregation_job,
    decryption_job,
    reveal_job,
    round_open_job,
    round_release_job,
    site_training_job,
)
from tensorguard_assets.lineage import latest_materialization_record, recorded_metadata
from tensorguard_assets.partitions import (
    ROUND_CADENCE,
    ROUND_SCHEDULE_CRON,
    round_partitions,
    round_site_key,
    site_partitions,
)
from tensorguard_resources import SiteRegistry

SITES_PARTITION_NAME = site_partitions.name or "sites"
PARTITION_TAG = "dagster/partition"
"""The run tag Dagster sets to a partitioned run's partition key."""
RECENT_ROUNDS = 14


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
    job=round_open_job,
    cron_schedule=ROUND_SCHEDULE_CRON[ROUND_CADENCE],
    default_status=DefaultScheduleStatus.STOPPED,
    description=(
        "Opens the round that just closed (its spec and reference adapter); the "
        "round_progress_sensor then launches each site's training and the release."
    ),
)
def round_open_schedule(context: ScheduleEvaluationContext) -> RunRequest | SkipReason:
    """A run request opening the latest complete round, once sites are registered."""
    window = round_partitions.get_prev_partition_window(context.scheduled_execution_time)
    if window is None:
        return SkipReason("no complete round window yet")
    round_key = round_partitions.get_partition_key_for_timestamp(window.start.timestamp())
    if not context.instance.get_dynamic_partitions(SITES_PARTITION_NAME):
        return SkipReason("no site registered yet (see the site_registry_sensor)")
    return RunRequest(run_key=f"open:{round_key}", partition_key=round_key)


def _materialized_partitions(instance: DagsterInstance, asset_name: str) -> set[str]:
    """Partitions of ``asset_name`` with at least one recorded materialisation."""
    return {str(key) for key in instance.get_materialized_partitions(AssetKey(asset_name))}


def _round_rules(instance: DagsterInstance, round_key: str) -> tuple[datetime | None, int]:
    """The deadline and quorum the round's spec recorded (None: no deadline)."""
    record = latest_materialization_record(instance, "round_spec", round_key)
    metadata = recorded_metadata(record) if record is not None else {}
    deadline_text = str(metadata.get("deadline") or "")
    deadline = datetime.fromisoformat(deadline_text) if deadline_text else None
    return deadline, int(metadata.get("min_sites") or 2)


def _failed_trainings(instance: DagsterInstance, partition_key: str) -> int:
    """How many runs of this site's training failed in this round."""
    return instance.get_runs_count(
        RunsFilter(
            job_name=site_training_job.name,
            statuses=[DagsterRunStatus.FAILURE],
            tags={PARTITION_TAG: partition_key},
        )
    )


def _training_requests(
    context: SensorEvaluationContext, round_key: str, pending: list[str]
) -> list[RunRequest]:
    """One run request per pending site; a failed training is retried under a new key."""
    requests: list[RunRequest] = []
    for site_id in pending:
        partition = round_site_key(round_key, site_id)
        attempt = training_attempt(_failed_trainings(context.instance, str(partition)))
        if attempt is None:
            context.log.warning(
                f"round {round_key}: training of {site_id} failed {MAX_TRAINING_ATTEMPTS} "
                "times; not retried again (the round goes on without it at its deadline)"
            )
            continue
        requests.append(
            RunRequest(
                run_key=f"train:{round_key}|{site_id}#{attempt}",
                job_name=site_training_job.name,
                partition_key=partition,
                tags={"tensorguard/training_attempt": str(attempt)},
            )
        )
    return requests


def _open_rounds(instance: DagsterInstance) -> list[str]:
    """The newest rounds whose spec is materialised (at most ``RECENT_ROUNDS``)."""
    return sorted(_materialized_partitions(instance, "round_spec"))[-RECENT_ROUNDS:]


def follow_on_requests(
    instance: DagsterInstance, *, after: str, builds: str, job_name: str
) -> list[RunRequest]:
    """One run request of ``job_name`` per open round where asset ``after`` is
    materialised and ``builds`` is not (the run key makes each launch happen once)."""
    done = _materialized_partitions(instance, after)
    built = _materialized_partitions(instance, builds)
    return [
        RunRequest(run_key=f"{job_name}:{round_key}", job_name=job_name, partition_key=round_key)
        for round_key in _open_rounds(instance)
        if round_key in done and round_key not in built
    ]


@sensor(
    jobs=[site_training_job, reveal_job, round_release_job],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Drives the sites' and the publisher's stages of open rounds: launches (and "
        "retries, up to 3 attempts) the training of every registered site that has no "
        "update yet, the sites' seed reveals once the aggregator has summed the round, and "
        "the release once the custodian has decrypted it."
    ),
)
def round_progress_sensor(context: SensorEvaluationContext) -> list[RunRequest] | SkipReason:
    """Run requests for the next site or publisher stage of every open round."""
    instance = context.instance
    open_rounds = _open_rounds(instance)
    if not open_rounds:
        return SkipReason("no round is open yet (round_open_schedule opens them)")
    site_ids = sorted(instance.get_dynamic_partitions(SITES_PARTITION_NAME))
    updated = _materialized_partitions(instance, "site_update")
    requests: list[RunRequest] = []
    for round_key in open_rounds:
        pending = [s for s in site_ids if str(round_site_key(round_key, s)) not in updated]
        requests.extend(_training_requests(context, round_key, pending))
    requests += follow_on_requests(
        instance, after="aggregated_update", builds="seed_reveals", job_name=reveal_job.name
    )
    requests += follow_on_requests(
        instance, after="global_adapter", builds="release", job_name=round_release_job.name
    )
    return requests or SkipReason("every open round is complete or waiting on running stages")


@sensor(
    jobs=[aggregation_job],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "The aggregator's sensor: aggregates a round once every registered site has an "
        "update or, at the round's deadline, with the sites that made it (the quorum in "
        "the round spec decides whether that is enough)."
    ),
)
def aggregation_sensor(context: SensorEvaluationContext) -> list[RunRequest] | SkipReason:
    """One aggregation run request per open round that is ready (run keys prevent repeats)."""
    instance = context.instance
    site_ids = sorted(instance.get_dynamic_partitions(SITES_PARTITION_NAME))
    updated = _materialized_partitions(instance, "site_update")
    aggregated = _materialized_partitions(instance, "aggregated_update")
    now = datetime.now(UTC)
    requests: list[RunRequest] = []
    for round_key in _open_rounds(instance):
        if round_key in aggregated:
            continue
        reported = [s for s in site_ids if str(round_site_key(round_key, s)) in updated]
        deadline, quorum = _round_rules(instance, round_key)
        progress = round_progress(site_ids, reported, deadline=deadline, quorum=quorum, now=now)
        if progress.stage is RoundStage.WAITING:
            continue
        context.log.info(f"round {round_key}: {progress.describe()}")
        requests.append(
            RunRequest(
                run_key=f"{aggregation_job.name}:{round_key}",
                job_name=aggregation_job.name,
                partition_key=round_key,
                tags={"tensorguard/round_stage": progress.stage.value},
            )
        )
    return requests or SkipReason("no open round is ready to aggregate")


@sensor(
    jobs=[decryption_job],
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "The custodian's sensor: decrypts a round's aggregate once the sites' seed reveals "
        "are in (the custodian verifies everything again before it decrypts)."
    ),
)
def decryption_sensor(context: SensorEvaluationContext) -> list[RunRequest] | SkipReason:
    """One decryption run request per round whose reveals are materialised."""
    requests = follow_on_requests(
        context.instance,
        after="seed_reveals",
        builds="global_adapter",
        job_name=decryption_job.name,
    )
    return requests or SkipReason("no round is waiting for decryption")
