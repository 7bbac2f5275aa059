"""``check_round`` on a round really run by the demo runner on a temporary instance."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetCheckEvaluation,
    AssetKey,
    AssetRecordsFilter,
    DagsterInstance,
    Definitions,
    EventLogRecord,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from tensorguard.sites import demo_site_registry
from tensorguard_assets import demo
from tensorguard_assets.check_round import NOT_ROUND_ASSETS, main
from tensorguard_assets.locations import all_in_one_definitions
from tensorguard_assets.partitions import round_site_key
from tests.asset_graph import CANARY_ASSETS, IDENTITY_ASSETS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ROUND = "2026-11-20"
# Joined at run time so that no source file contains the marker itself.
MARKER = "DUMMY" + "_"


@dataclass(frozen=True)
class RecordedRound:
    """A round materialised on its own instance and artifact store."""

    dagster_home: Path
    artifact_root: Path
    definitions: Definitions
    site_ids: list[str]


def _write_instance_config(dagster_home: Path) -> None:
    """The project's local dagster.yaml (storage under DAGSTER_HOME), as ``make`` installs it."""
    shutil.copy(ROOT / "dagster.yaml", dagster_home / "dagster.yaml")


@pytest.fixture(scope="module")
def recorded_round(tmp_path_factory: pytest.TempPathFactory) -> RecordedRound:
    """One full round of two demo sites (the quorum), run once for the module."""
    root = tmp_path_factory.mktemp("round")
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    _write_instance_config(dagster_home)
    demo_sites = demo_site_registry()
    site_ids = sorted(demo_sites)[:2]
    sites_file = root / "sites.yaml"
    sites_file.write_text(
        yaml.safe_dump(
            {
                "sites": [
                    {"id": site, "data_dir": str(demo_sites[site].data_dir)} for site in site_ids
                ]
            }
        ),
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as patch:
        for name in list(os.environ):
            if name.startswith("TG_") or name == "DATABASE_URL":
                patch.delenv(name)
        patch.setenv("DAGSTER_HOME", str(dagster_home))
        patch.setenv("TG_ARTIFACT_ROOT", str(root / "state" / "artifacts"))
        patch.setenv("TG_SITES_FILE", str(sites_file))
        definitions = all_in_one_definitions()
        instance = DagsterInstance.get()
        try:
            assert demo.run_round(instance, ROUND, site_ids)
        finally:
            instance.dispose()
    return RecordedRound(dagster_home, root / "state" / "artifacts", definitions, site_ids)


@dataclass(frozen=True)
class CheckRun:
    """The command's exit code, its table rows keyed by (asset, partition), its stderr."""

    code: int
    rows: dict[tuple[str, str], str]
    err: str

    def failing(self) -> set[str]:
        """The assets with a FAILED row."""
        return {asset for (asset, _), line in self.rows.items() if " FAILED " in line}


Check = Callable[..., CheckRun]


@pytest.fixture
def check(
    recorded_round: RecordedRound,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Check:
    """Run the command with the given arguments on the recorded round's instance, with
    ``TG_ARTIFACT_ROOT`` naming the root the round ran with."""
    monkeypatch.setenv("DAGSTER_HOME", str(recorded_round.dagster_home))
    monkeypatch.setenv("TG_ARTIFACT_ROOT", str(recorded_round.artifact_root))

    def run(*argv: str) -> CheckRun:
        code = main(list(argv), definitions=recorded_round.definitions)
        rows: dict[tuple[str, str], str] = {}
        output = capsys.readouterr()
        for line in output.out.splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] in {"ok", "FAILED", "not"}:
                rows[(fields[0], fields[1])] = line
        return CheckRun(code, rows, output.err)

    return run


@pytest.fixture
def instance(recorded_round: RecordedRound) -> Iterator[DagsterInstance]:
    """The recorded round's Dagster instance."""
    opened = DagsterInstance.from_config(str(recorded_round.dagster_home))
    try:
        yield opened
    finally:
        opened.dispose()


def _latest_record(instance: DagsterInstance, asset: str) -> EventLogRecord:
    """The latest materialisation record of ``asset`` in the recorded round."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[ROUND]), limit=1
    ).records
    assert records, f"{asset} was not materialised for {ROUND}"
    return records[0]


def _artifact_path(instance: DagsterInstance, asset: str) -> Path:
    """The artifact path that ``asset``'s latest materialisation recorded."""
    materialization = _latest_record(instance, asset).asset_materialization
    assert materialization is not None
    return Path(str(materialization.metadata["path"].value))


def _check_with_changed_file(
    check: Check, path: Path, change: Callable[[bytes], bytes]
) -> CheckRun:
    """Run the check while ``path`` holds changed bytes; the original is put back after."""
    original = path.read_bytes()
    path.write_bytes(change(original))
    try:
        return check("--round", ROUND)
    finally:
        path.write_bytes(original)


def test_recorded_round_passes(recorded_round: RecordedRound, check: Check) -> None:
    run = check("--round", ROUND)
    assert run.code == 0, run.rows
    assert run.failing() == set()
    site_parts = {str(round_site_key(ROUND, site)) for site in recorded_round.site_ids}
    for asset in ("site_dataset", "site_adapter", "site_update"):
        assert {part for (name, part) in run.rows if name == asset} == site_parts
    assert ("base_model", "-") in run.rows
    assert " ok " in run.rows[("release", ROUND)]
    assert "quorum_met" in run.rows[("aggregated_update", ROUND)]
    assert "not built" in run.rows[("tensorrt_engine", ROUND)]
    assert "gpu_export_job" in run.rows[("tensorrt_engine", ROUND)]
    expected_assets = {
        key.to_user_string() for key in recorded_round.definitions.resolve_all_asset_keys()
    } - set(NOT_ROUND_ASSETS)
    assert {name for name, _ in run.rows} == expected_assets


def test_it_prints_the_artifact_root_it_checked(
    recorded_round: RecordedRound, check: Check, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["--round", ROUND], definitions=recorded_round.definitions)
    assert f"Artifact root: {recorded_round.artifact_root.resolve()}" in capsys.readouterr().out
    explicit = check("--round", ROUND, "--artifact-root", str(recorded_round.artifact_root))
    assert explicit.code == 0


def test_placeholder_in_another_root_fails_naming_the_file_and_both_roots(
    recorded_round: RecordedRound,
    check: Check,
    instance: DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The issue's scenario: a placeholder written into the root the command is pointed
    at, while the instance recorded the round's files under another root."""
    recorded = _artifact_path(instance, "onnx_model")
    other_root = (tmp_path / "other-artifacts").resolve()
    placeholder = other_root / recorded.relative_to(recorded_round.artifact_root)
    placeholder.mkdir(parents=True)
    (placeholder / "model.onnx").write_text(f"{MARKER}ONNX_MODEL_CONTENT", encoding="utf-8")
    for run in (
        check("--round", ROUND, "--artifact-root", str(other_root)),
        _with_env_root(check, monkeypatch, other_root),
    ):
        assert run.code == 1
        line = run.rows[("onnx_model", ROUND)]
        assert f"recorded file {recorded} lies outside the artifact root" in line
        assert str(other_root) in line
        assert f"recorded under {recorded_round.artifact_root}" in line
        assert {"onnx_model", "global_adapter", "gate_decision", "tgsp_package"} <= run.failing()
        assert "release" not in run.failing()
    assert check("--round", ROUND).code == 0


def _with_env_root(check: Check, monkeypatch: pytest.MonkeyPatch, root: Path) -> CheckRun:
    """Run the check with ``TG_ARTIFACT_ROOT`` (not the flag) naming ``root``."""
    with monkeypatch.context() as patch:
        patch.setenv("TG_ARTIFACT_ROOT", str(root))
        return check("--round", ROUND)


def test_default_round_is_the_newest_recorded(check: Check) -> None:
    run = check()
    assert run.code == 0
    assert ("gate_decision", ROUND) in run.rows


def test_placeholder_marker_fails_naming_file_and_marker(
    check: Check, instance: DagsterInstance
) -> None:
    report = _artifact_path(instance, "evaluation_report")
    run = _check_with_changed_file(
        check, report, lambda data: data + f'\n{{"note": "{MARKER}"}}\n'.encode()
    )
    assert run.code == 1
    assert run.failing() == {"evaluation_report"}
    line = run.rows[("evaluation_report", ROUND)]
    assert f"placeholder marker found ({report.name}: {MARKER})" in line
    assert check("--round", ROUND).code == 0


def test_modified_file_reports_digest_mismatch(check: Check, instance: DagsterInstance) -> None:
    config_file = _artifact_path(instance, "global_adapter") / "adapter_config.json"
    run = _check_with_changed_file(check, config_file, lambda data: data.replace(b"{", b"{ ", 1))
    assert run.code == 1
    assert run.failing() == {"global_adapter"}
    line = run.rows[("global_adapter", ROUND)]
    assert "digest mismatch" in line
    assert "placeholder" not in line


def test_failed_check_on_latest_materialisation_fails(
    check: Check, instance: DagsterInstance
) -> None:
    record = _latest_record(instance, "onnx_model")
    target = AssetCheckEvaluationTargetMaterializationData(
        storage_id=record.storage_id,
        run_id=record.event_log_entry.run_id,
        timestamp=record.event_log_entry.timestamp,
    )

    def report(passed: bool) -> None:
        instance.report_runless_asset_event(
            AssetCheckEvaluation(
                asset_key=AssetKey("onnx_model"),
                check_name="onnx_parity",
                passed=passed,
                target_materialization_data=target,
            )
        )

    report(False)
    try:
        run = check("--round", ROUND)
    finally:
        report(True)
    assert run.code == 1
    assert run.failing() == {"onnx_model"}
    line = run.rows[("onnx_model", ROUND)]
    assert "checks not passed on the latest materialisation: onnx_parity" in line
    assert check("--round", ROUND).code == 0


def test_round_never_run_fails_as_missing(check: Check) -> None:
    run = check("--round", "2026-11-21")
    assert run.code == 1
    assert "never materialised" in run.rows[("round_spec", "2026-11-21")]
    assert " ok " in run.rows[("base_model", "-")]
    assert "not built" in run.rows[("tensorrt_engine", "2026-11-21")]


def test_not_a_round_key_is_a_usage_error(check: Check) -> None:
    run = check("--round", "last-tuesday")
    assert run.code == 2
    assert "'last-tuesday' is not a round partition" in run.err


def test_without_dagster_home_it_says_what_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([], definitions=all_in_one_definitions({})) == 2
    assert "DAGSTER_HOME is not set" in capsys.readouterr().err


def test_assets_outside_a_round_are_exactly_the_graphs_non_round_assets() -> None:
    """check_round leaves out exactly the assets no round materialises (a new one must be
    declared, or the check would fail every round as 'never materialised')."""
    assert set(NOT_ROUND_ASSETS) == IDENTITY_ASSETS | CANARY_ASSETS
