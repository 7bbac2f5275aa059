"""`make demo`'s summary of a failed run: the reason once, no stack trace unless asked."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test

from tensorguard_assets import demo
from tensorguard_assets.locations import Federation
from tensorguard_assets.run_report import quiet_console_logger

MISSING_IN_PRODUCTION = (
    "DATABASE_URL",
    "TG_KEY_MASTER_SITES",
    "TG_KEY_MASTER_CUSTODIAN",
    "TG_KEY_MASTER_RELEASE",
)


@pytest.fixture
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    monkeypatch.setenv("TG_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    with instance_for_test() as dagster_instance:
        yield dagster_instance


def quiet_federation() -> Federation:
    return Federation(loggers={"console": quiet_console_logger})


def test_a_resource_failure_names_every_missing_variable_once_without_a_traceback(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    assert not demo.run_stage(quiet_federation(), instance, "setup_job", None)
    out, err = capsys.readouterr()
    assert "Stack Trace" not in out + err
    assert "Traceback" not in out + err
    [reason] = [line for line in out.splitlines() if "FAILED at" in line]
    assert reason.strip().startswith("FAILED at resource set-up for step base_model:")
    assert "production gate failed" in reason
    for variable in MISSING_IN_PRODUCTION:
        assert (out + err).count(f"{variable} is not set") == 1, variable


def test_a_step_failure_prints_its_reason_once(
    instance: DagsterInstance, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no-such-model"
    config: dict[str, dict[str, object]] = {"base_model": {"model_dir": str(missing)}}
    assert not demo.run_stage(quiet_federation(), instance, "setup_job", None, config)
    out, err = capsys.readouterr()
    assert "Stack Trace" not in out + err
    [reason] = [line for line in out.splitlines() if "FAILED at" in line]
    assert reason.strip().startswith("FAILED at step base_model: base_model failed:")
    assert (out + err).count(str(missing)) == 1


def test_traceback_keeps_dagsters_stack_traces(
    instance: DagsterInstance, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    assert not demo.run_stage(Federation(), instance, "setup_job", None)
    out, err = capsys.readouterr()
    assert "Stack Trace" in out + err
    assert out.count("FAILED at") == 1
