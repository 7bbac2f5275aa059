"""``tensorguard round start|status`` (#17 item 6): the daemon path's round commands."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRun, DagsterRunStatus

from tensorguard.cli import main
from tensorguard_assets.round_control import ROUND_STAGES
from tests.services.dagster_webserver import DagsterUI, prepare_dagster_home, running_dagster_ui
from tests.services.process import free_port

ROUND = "2026-11-23"


def test_the_stages_are_the_code_locations_jobs_in_round_order() -> None:
    from tensorguard_assets.jobs import __doc__ as jobs_doc
    from tensorguard_assets.locations import location_of_job

    for stage in ROUND_STAGES:
        assert location_of_job(stage.job).name == stage.location, stage.job
    assert jobs_doc is not None
    positions = [jobs_doc.index(f"``{stage.job}``") for stage in ROUND_STAGES]
    assert positions == sorted(positions)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster-home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n", encoding="utf-8")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def _add(
    instance: DagsterInstance, job: str, partition: str | None, status: DagsterRunStatus
) -> str:
    tags = {} if partition is None else {"dagster/partition": partition}
    if partition is not None and "|" in partition:
        tags["dagster/partition/round"] = partition.split("|")[0]
    run = instance.add_run(DagsterRun(job_name=job, status=status, tags=tags))
    return run.run_id


def test_status_prints_each_stages_latest_run_of_the_round(
    dagster_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    del dagster_home  # DAGSTER_HOME points at it
    with DagsterInstance.get() as instance:
        setup = _add(instance, "setup_job", None, DagsterRunStatus.SUCCESS)
        _add(instance, "round_open_job", ROUND, DagsterRunStatus.FAILURE)
        opened = _add(instance, "round_open_job", ROUND, DagsterRunStatus.SUCCESS)  # the retry
        _add(instance, "round_open_job", "2026-11-24", DagsterRunStatus.STARTED)  # other round
        trained = _add(instance, "site_training_job", f"{ROUND}|site-a", DagsterRunStatus.STARTED)
        _add(instance, "site_training_job", "2026-11-24|site-a", DagsterRunStatus.CANCELED)
    assert main(["round", "status", ROUND, "--json"]) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    by_job = {row["job"]: row for row in stages}
    assert by_job["setup_job"]["run_id"] == setup
    assert (by_job["round_open_job"]["run_id"], by_job["round_open_job"]["status"]) == (
        opened,
        "SUCCESS",
    )
    assert by_job["site_training_job"]["run_id"] == trained
    assert by_job["site_training_job"]["partition"] == f"{ROUND}|site-a"
    assert by_job["aggregation_job"]["status"] == "not started"
    assert [row["job"] for row in stages] == [stage.job for stage in ROUND_STAGES]
    assert main(["round", "status", ROUND]) == 0
    text = capsys.readouterr().out
    assert opened in text
    assert "not started" in text


def test_refusals_name_what_to_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["round", "status", "last-week"]) == 3
    assert "YYYY-MM-DD" in capsys.readouterr().err
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    assert main(["round", "status", ROUND]) == 3
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err
    unreachable = f"http://127.0.0.1:{free_port()}"
    assert main(["round", "start", ROUND, "--webserver", unreachable]) == 1
    assert "cannot reach the Dagster webserver" in capsys.readouterr().err
    assert main(["round", "start", ROUND, "--webserver", "ftp://x"]) == 3


@pytest.fixture
def webserver(tmp_path: Path) -> Iterator[DagsterUI]:
    """dagster-webserver for workspace.yaml without a daemon: submitted runs stay queued."""
    home = prepare_dagster_home(tmp_path / "home")
    env = {**os.environ, "TG_ARTIFACT_ROOT": str(tmp_path / "state" / "artifacts")}
    with running_dagster_ui(home, env, with_daemon=False) as ui:
        yield ui


@pytest.mark.slow
def test_start_submits_the_round_to_the_webserver_and_status_shows_it(
    webserver: DagsterUI, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["round", "start", ROUND, "--webserver", webserver.url, "--json"]) == 0
    [run] = json.loads(capsys.readouterr().out)["runs"]
    assert (run["job"], run["location"], run["partition"]) == (
        "round_open_job",
        "tensorguard",
        ROUND,
    )
    monkeypatch.setenv("DAGSTER_HOME", str(webserver.dagster_home))
    monkeypatch.chdir(webserver.dagster_home)
    assert main(["round", "status", ROUND, "--json"]) == 0
    stages = {row["job"]: row for row in json.loads(capsys.readouterr().out)["stages"]}
    assert stages["round_open_job"]["run_id"] == run["run_id"]
    assert stages["round_open_job"]["status"] == "QUEUED"
    assert stages["round_open_job"]["partition"] == ROUND
