"""Drive a round on the daemon path: submit its runs to dagster-webserver, follow them.

The Dagster half of ``tensorguard round start|status`` (:mod:`tensorguard.cli.round`):
the core library never imports Dagster, so the command's handlers import this module
only when they run, and only where the pipeline extra is installed.

Runs are submitted through the webserver's GraphQL API
(``dagster_graphql.DagsterGraphQLClient``, a public Dagster API); statuses are read
from the Dagster instance in ``DAGSTER_HOME``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from dagster import DagsterInstance, RunsFilter
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from tensorguard.errors import ConfigurationError, TensorGuardError

WEBSERVER_ENV = "TG_DAGSTER_WEBSERVER"
PARTITION_TAG = "dagster/partition"
ROUND_DIMENSION_TAG = "dagster/partition/round"
TERMINAL = frozenset({"SUCCESS", "FAILURE", "CANCELED"})


@dataclass(frozen=True)
class Stage:
    """One job of a round, the code location that runs it, and how it is partitioned."""

    job: str
    location: str
    partitioned: str  # "none", "round" or "round×site"


SETUP_STAGES = (
    Stage("setup_job", "tensorguard", "none"),
    Stage("key_ceremony_job", "tensorguard-custodian", "none"),
)
OPEN_STAGE = Stage("round_open_job", "tensorguard", "round")
ROUND_STAGES = (
    *SETUP_STAGES,
    OPEN_STAGE,
    Stage("site_training_job", "tensorguard", "round×site"),
    Stage("aggregation_job", "tensorguard-aggregator", "round"),
    Stage("reveal_job", "tensorguard", "round"),
    Stage("decryption_job", "tensorguard-custodian", "round"),
    Stage("round_release_job", "tensorguard", "round"),
)
"""Every stage of a round, in order (tensorguard_assets.jobs; a test checks the names
and locations against the code locations)."""


def connect(url: str) -> Any:
    """A GraphQL client of the webserver at ``url``, once it answers ``/server_info``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"webserver URL {url!r} is not http(s)://HOST[:PORT]; set --webserver or "
            f"{WEBSERVER_ENV}"
        )
    _require_reachable(url.rstrip("/"))
    return DagsterGraphQLClient(
        parts.hostname,
        port_number=parts.port,
        use_https=parts.scheme == "https",
        timeout=60,
    )


def _require_reachable(url: str) -> None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=10) as response:  # noqa: S310
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except (urllib.error.URLError, OSError) as exc:
        problem = type(exc).__name__
    raise TensorGuardError(
        f"cannot reach the Dagster webserver at {url} ({problem}); start "
        f"dagster-webserver -w workspace.yaml or set --webserver/{WEBSERVER_ENV}"
    )


def submit(client: Any, stage: Stage, url: str, tags: dict[str, str] | None = None) -> str:
    """Submit ``stage``'s job to its code location; return the run id."""
    try:
        return str(
            client.submit_job_execution(
                stage.job,
                repository_location_name=stage.location,
                repository_name="__repository__",
                tags=tags or {},
            )
        )
    except DagsterGraphQLClientError as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise TensorGuardError(
            f"the Dagster webserver at {url} refused {stage.job} ({stage.location}): "
            f"{reason}; check that it serves workspace.yaml and that the job exists there"
        ) from None


def wait(client: Any, run_id: str, job: str, timeout: float) -> str:
    """Poll run ``run_id`` until it ends; raise unless it succeeded within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        status = str(client.get_run_status(run_id).value)
        if status in TERMINAL:
            if status != "SUCCESS":
                raise TensorGuardError(
                    f"{job} run {run_id} ended {status}; open it in the UI (Runs) or "
                    f"`tensorguard round status` and fix it before starting the round"
                )
            return status
        if time.monotonic() > deadline:
            raise TensorGuardError(
                f"{job} run {run_id} is still {status} after {timeout:g}s; is dagster-daemon "
                "running (queued runs need it)?"
            )
        time.sleep(2)


def _round_of(tags: dict[str, str]) -> str | None:
    if ROUND_DIMENSION_TAG in tags:
        return tags[ROUND_DIMENSION_TAG]
    partition = tags.get(PARTITION_TAG)
    if partition is None:
        return None
    return partition.split("|")[0]


def stage_runs(instance: Any, round_key: str) -> list[dict[str, str]]:
    """Each stage's latest run of ``round_key`` (set-up stages: their latest run at all);
    a stage with none is listed as ``not started``. Site training: one row per site."""
    rows: list[dict[str, str]] = []
    for stage in ROUND_STAGES:
        if stage.partitioned == "none":
            runs = instance.get_runs(RunsFilter(job_name=stage.job), limit=1)
        elif stage.partitioned == "round":
            runs = instance.get_runs(
                RunsFilter(job_name=stage.job, tags={PARTITION_TAG: round_key}), limit=1
            )
        else:
            latest: dict[str, Any] = {}
            for run in instance.get_runs(RunsFilter(job_name=stage.job), limit=1000):
                if _round_of(dict(run.tags)) == round_key:
                    latest.setdefault(run.tags.get(PARTITION_TAG, ""), run)  # newest first
            runs = [latest[key] for key in sorted(latest)]
        if not runs:
            rows.append({"job": stage.job, "partition": "", "status": "not started"})
            continue
        for run in runs:
            rows.append(
                {
                    "job": stage.job,
                    "partition": str(run.tags.get(PARTITION_TAG, "")),
                    "status": str(run.status.value),
                    "run_id": str(run.run_id),
                }
            )
    return rows


def round_status(round_key: str) -> list[dict[str, str]]:
    """:func:`stage_runs` of ``round_key`` on the instance in ``DAGSTER_HOME``."""
    with DagsterInstance.get() as instance:
        return stage_runs(instance, round_key)
