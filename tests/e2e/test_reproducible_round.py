"""The same round twice, in two state directories with determinism on: every
deterministic artifact has the same digest (#15), and ``round reproduce`` re-derives a
finished round from its recorded inputs.

Both runs take the base model and the demo sites' data from copies inside their own
state directory, so nothing may depend on where the publisher keeps its files.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import instance_for_test

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.model_card import MODEL_CARD_FILE
from tensorguard.release import DECISION_FILE
from tensorguard.sites import demo_site_registry
from tests.e2e.conftest import unique_fleet
from tests.e2e.rounds import (
    StageRun,
    asset_metadata,
    base_model_config,
    development_process_env,
    failed_stages,
    run_full_round,
    site_stage,
    tensorguard_env,
)
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.slow

ROUND = "2026-11-24"
LOCAL_STEPS = 6
RECOVERY_STEPS = 4
RUN_CONFIG: dict[str, dict[str, Any]] = {
    "setup_job": {},
    "site_training_job": {"ops": {"site_adapter": {"config": {"steps": LOCAL_STEPS}}}},
    "round_release_job": {"ops": {"pruned_model": {"config": {"recovery_steps": RECOVERY_STEPS}}}},
}
PER_ROUND = ("global_adapter", "pruned_model", "onnx_model", "moai_export", "evaluation_report")
PER_SITE = (("site_dataset", "data_digest"), ("site_adapter", "digest"))
"""The site_dataset summary names the site's own data directory; its data digest is what
is reproducible."""


@dataclass(frozen=True)
class FinishedRound:
    """One run of the round: its state directory, environment and stage runs."""

    state_dir: Path
    env: dict[str, str]
    stages: dict[str, StageRun]
    sites_file: Path
    base_model_dir: Path

    @property
    def artifact_root(self) -> Path:
        return Path(self.env["TG_ARTIFACT_ROOT"])

    def metadata(self, asset_name: str) -> dict[str, Any]:
        return asset_metadata(self.stages, asset_name)

    def site_metadata(self, asset_name: str, site: str) -> dict[str, Any]:
        return self.stages[site_stage(site)].metadata(asset_name)


def _copy_inputs(state_dir: Path, base_model: Path, sites: list[str]) -> tuple[Path, Path]:
    """The base model and each demo site's data copied under ``state_dir``, and a site
    registry file pointing at the copies."""
    model_dir = state_dir / "inputs" / "base-model"
    shutil.copytree(base_model, model_dir)
    registry = demo_site_registry()
    entries = []
    for site in sites:
        data_dir = state_dir / "inputs" / "sites" / site
        shutil.copytree(registry[site].data_dir, data_dir)
        entries.append({"id": site, "data_dir": str(data_dir), "max_weight": 300})
    sites_file = state_dir / "inputs" / "sites.yaml"
    sites_file.write_text(yaml.safe_dump({"sites": entries}), encoding="utf-8")
    return model_dir, sites_file


def _run_round(
    state_dir: Path, base_model: Path, sites: list[str], broker: MosquittoBroker
) -> FinishedRound:
    model_dir, sites_file = _copy_inputs(state_dir, base_model, sites)
    env = tensorguard_env(state_dir, fleet=unique_fleet("e2e-repro"), broker=broker)
    env["TG_SITES_FILE"] = str(sites_file)
    config = {**RUN_CONFIG, "setup_job": base_model_config(model_dir)}
    with (
        development_process_env(),
        pytest.MonkeyPatch.context() as patch,
        instance_for_test() as instance,
    ):
        patch.setenv("TG_DETERMINISTIC", "true")
        stages = run_full_round(instance, env, ROUND, sites, run_config=config)
    assert all(run.success for run in stages.values()), failed_stages(stages)
    return FinishedRound(state_dir, env, stages, sites_file, model_dir)


@pytest.fixture(scope="module")
def two_rounds(
    tmp_path_factory: pytest.TempPathFactory,
    prebuilt_base_model: Path,
    demo_sites: list[str],
    mosquitto_broker: MosquittoBroker,
) -> tuple[FinishedRound, FinishedRound]:
    first = _run_round(
        tmp_path_factory.mktemp("first"), prebuilt_base_model, demo_sites, mosquitto_broker
    )
    second = _run_round(
        tmp_path_factory.mktemp("second-state-dir"),
        prebuilt_base_model,
        demo_sites,
        mosquitto_broker,
    )
    return first, second


def test_every_deterministic_artifact_has_the_same_digest(
    two_rounds: tuple[FinishedRound, FinishedRound], demo_sites: list[str]
) -> None:
    first, second = two_rounds
    differing: list[str] = []
    compared: dict[str, str] = {}
    for asset in PER_ROUND:
        a, b = first.metadata(asset)["digest"], second.metadata(asset)["digest"]
        compared[asset] = str(a)
        if a != b:
            differing.append(f"{asset}: {a} != {b}")
    for asset, key in PER_SITE:
        for site in demo_sites:
            a = first.site_metadata(asset, site)[key]
            b = second.site_metadata(asset, site)[key]
            compared[f"{asset}[{site}]"] = str(a)
            if a != b:
                differing.append(f"{asset}[{site}]: {a} != {b}")
    assert differing == [], "\n".join(differing)
    print("identical digests:", compared)


def test_package_manifest_digests_are_reproducible(
    two_rounds: tuple[FinishedRound, FinishedRound],
) -> None:
    """Every plaintext file of the package has the same digest in two builds, the gate
    decision and the model card included (they record the MOAI self-check as its bound
    and outcome, not the error a fresh encryption measured, and the card states the
    validity window's length, not the build time). The packages themselves differ
    (encryption, signatures, the header's created/expires)."""
    first, second = two_rounds
    manifests = [
        {
            entry["path"]: entry["sha256"]
            for entry in round_.metadata("tgsp_package")["package_files"]
        }
        for round_ in two_rounds
    ]
    assert manifests[0].keys() == manifests[1].keys()
    differing = {path for path in manifests[0] if manifests[0][path] != manifests[1][path]}
    assert differing == set(), differing
    assert {MODEL_CARD_FILE, DECISION_FILE} <= manifests[0].keys()
    assert any(path.startswith("global_adapter/") for path in manifests[0])
    assert any(path.startswith("onnx/") for path in manifests[0])
    assert first.metadata("tgsp_package")["digest"] != second.metadata("tgsp_package")["digest"]
    measured = [r.metadata("gate_decision")["moai_self_check_measured_error"] for r in two_rounds]
    print("MOAI self-check errors (fresh encryptions, not in the package):", measured)


def test_no_publisher_path_in_any_packaged_file(
    two_rounds: tuple[FinishedRound, FinishedRound],
) -> None:
    for round_ in two_rounds:
        for asset in ("global_adapter", "pruned_model", "onnx_model", "moai_export"):
            root = Path(round_.metadata(asset)["path"])
            for file in [root] if root.is_file() else root.rglob("*"):
                if file.is_file():
                    data = file.read_bytes()
                    for path in (round_.state_dir, round_.base_model_dir):
                        assert str(path).encode() not in data, f"{file} names {path}"


def _reproduce(
    round_: FinishedRound, scratch: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any]]:
    """``tensorguard round reproduce`` on the round, as a user runs it (JSON output)."""
    code = main(
        [
            "round",
            "reproduce",
            ROUND,
            "--artifact-root",
            str(round_.artifact_root),
            "--base-model",
            str(round_.base_model_dir),
            "--scratch",
            str(scratch),
            "--json",
        ]
    )
    return code, json.loads(capsys.readouterr().out)


def test_round_reproduce_reports_every_stage_equal(
    two_rounds: tuple[FinishedRound, FinishedRound],
    demo_sites: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    first, _ = two_rounds
    code, report = _reproduce(first, tmp_path, capsys)
    stages = {stage["stage"]: stage for stage in report["stages"]}
    assert report["ok"], report
    assert code == ExitCode.OK
    for site in demo_sites:
        assert stages[f"site_adapter[{site}]"]["kind"] == "reproduced"
        assert (
            stages[f"site_adapter[{site}]"]["recorded"]
            == first.site_metadata("site_adapter", site)["digest"]
        )
        assert stages[f"site_update[{site}]"]["kind"] == "verified instead"
    for asset in ("pruned_model", "onnx_model"):
        assert stages[asset]["kind"] == "reproduced"
        assert stages[asset]["reproduced"] == first.metadata(asset)["digest"]
    assert stages["aggregated_update"]["recorded"] == first.metadata("aggregated_update")["digest"]


def test_round_reproduce_names_the_stage_where_a_changed_data_file_diverges(
    two_rounds: tuple[FinishedRound, FinishedRound],
    demo_sites: list[str],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    _, second = two_rounds
    site = demo_sites[1]
    registry = yaml.safe_load(second.sites_file.read_text(encoding="utf-8"))
    data_dir = Path(next(e["data_dir"] for e in registry["sites"] if e["id"] == site))
    train = data_dir / "train.jsonl"
    lines = train.read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join(lines[1:] + lines[:1]) + "\n", encoding="utf-8")
    code, report = _reproduce(second, tmp_path, capsys)
    assert code == ExitCode.INTEGRITY
    assert report["first_diverging_stage"] == f"site_dataset[{site}]"
    different = [stage["stage"] for stage in report["stages"] if not stage["equal"]]
    assert different == [f"site_dataset[{site}]", f"site_adapter[{site}]"]
