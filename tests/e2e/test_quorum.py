"""Quorum in a real round: one of three registered sites sends no update.

Two updates make a round when ``min_sites`` is 2; with ``min_sites`` 3 the aggregation
run fails naming the quorum, records nothing, and the round's later runs never start.
The silent site is tried twice: first as a site that never produced anything (no
signing key yet), then enrolled with a key.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    build_init_resource_context,
    instance_for_test,
)

from tensorguard_assets.locations import ROUND_RELEASE_JOBS
from tensorguard_assets.resources import build_resources
from tensorguard_assets.site_keys import SITE_PUBLIC_KEYS_DIR, site_signer
from tests.e2e.conftest import unique_fleet
from tests.e2e.rounds import (
    AGGREGATION_JOB,
    SETUP_JOB,
    RunGroup,
    base_model_config,
    development_process_env,
    failed_stages,
    pipeline_definitions,
    run_release,
    start_round,
    tensorguard_env,
)

pytestmark = pytest.mark.slow

ROUND = "2026-11-22"
AGGREGATION_ASSETS = ("aggregated_update", "seed_reveals", "global_adapter")


@dataclass(frozen=True)
class QuorumRuns:
    """Aggregation attempts over a round where one registered site is silent."""

    instance: DagsterInstance
    trained_sites: list[str]
    silent_site: str
    never_enrolled: RunGroup
    too_few: RunGroup
    enough: RunGroup


def aggregation_config(min_sites: int) -> dict[str, object]:
    """Run config setting the round's quorum."""
    return {"ops": {"aggregated_update": {"config": {"min_sites": min_sites}}}}


def enrol_site_key(env: dict[str, str], site_id: str) -> None:
    """Give ``site_id`` its signing key in the sites' development vault and publish its
    public key, as ``tensorguard keys generate --name site-<id>`` and enrolment would."""
    vault = build_resources(env)["site_keys"]
    context = build_init_resource_context()
    vault.setup_for_execution(context)
    try:
        site_signer(vault, Path(env["TG_ARTIFACT_ROOT"]) / SITE_PUBLIC_KEYS_DIR, site_id)
    finally:
        vault.teardown_after_execution(context)


@pytest.fixture(scope="module")
def quorum_runs(
    tmp_path_factory: pytest.TempPathFactory, prebuilt_base_model: Path, demo_sites: list[str]
) -> Iterator[QuorumRuns]:
    """Train two of the three demo sites, then aggregate with quorum 3 and with quorum 2."""
    *trained, silent = demo_sites
    env = tensorguard_env(tmp_path_factory.mktemp("quorum"), fleet=unique_fleet("e2e-quorum"))
    definitions = pipeline_definitions(env)
    with development_process_env(), instance_for_test() as instance:
        stages = start_round(
            definitions,
            instance,
            ROUND,
            registered_sites=demo_sites,
            trained_sites=trained,
            run_config={SETUP_JOB: base_model_config(prebuilt_base_model)},
        )
        assert all(run.success for run in stages.values()), failed_stages(stages)

        def aggregate(min_sites: int, *, release: bool = False) -> RunGroup:
            return run_release(
                definitions,
                instance,
                ROUND,
                run_config={AGGREGATION_JOB: aggregation_config(min_sites)},
                jobs=ROUND_RELEASE_JOBS if release else ROUND_RELEASE_JOBS[:-1],
            )

        never_enrolled = aggregate(2)
        enrol_site_key(env, silent)
        too_few = aggregate(3)
        enough = aggregate(2, release=True)  # the whole release, without the silent site
        yield QuorumRuns(instance, trained, silent, never_enrolled, too_few, enough)


def test_two_of_three_updates_aggregate_with_quorum_two(quorum_runs: QuorumRuns) -> None:
    run = quorum_runs.enough
    assert run.success, run.failure_messages()
    aggregate = run.metadata("aggregated_update")
    assert aggregate["accepted_count"] == 2
    assert aggregate["accepted_sites"].split(", ") == quorum_runs.trained_sites
    assert aggregate["missing_sites"] == quorum_runs.silent_site
    assert aggregate["rejected_count"] == 0
    assert run.check_results()["aggregated_update.quorum_met"] is True
    assert run.metadata("global_adapter")["sites"] == 2
    # The silent site had masked nothing, but every survivor masked with it: the
    # survivors' signed seed reveals let the custodian remove those masks exactly.
    reveals = run.metadata("seed_reveals")
    assert reveals["dropped_sites"] == quorum_runs.silent_site
    assert reveals["revealing_sites"] == 2
    # ...and the round goes on to a gated, published release of the two sites' model.
    assert run.check_results()["gate_decision.gate_passed"] is True
    assert run.metadata("release")["version"] >= 1


def test_quorum_three_fails_naming_the_quorum_and_records_nothing(
    quorum_runs: QuorumRuns,
) -> None:
    run = quorum_runs.too_few
    assert not run.success
    messages = run.failure_messages()
    silent = quorum_runs.silent_site
    assert f"aggregated_update[{ROUND}] (quorum; no update from: {silent})" in messages
    assert "only 2 valid site updates, quorum is 3" in messages
    assert list(run.runs) == [AGGREGATION_JOB]  # the reveals and decryption never start
    assert run.materialized_assets() == set()
    for asset_name in AGGREGATION_ASSETS:
        records = quorum_runs.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset_name)), limit=100
        ).records
        assert [r.run_id for r in records if r.run_id in run.run_ids()] == [], asset_name


def test_a_site_that_never_sent_anything_counts_as_missing(quorum_runs: QuorumRuns) -> None:
    run = quorum_runs.never_enrolled
    assert run.success, run.failure_messages()
    aggregate = run.metadata("aggregated_update")
    assert aggregate["accepted_count"] == 2
    assert aggregate["missing_sites"] == quorum_runs.silent_site
