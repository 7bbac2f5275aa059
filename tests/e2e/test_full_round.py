"""The whole round on the embedded default (SQLite) with a real Mosquitto broker:
3 sites train → encrypt → aggregate → evaluate → gate → package → publish, then the
demo edge node's agent installs the release and reports success over MQTT."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import DagsterInstance, instance_for_test

from tensorguard.digest import sha256_file
from tensorguard.fleet.agent import EdgeAgent, run_once
from tensorguard.fleet.agent_config import load_agent_config
from tensorguard.fleet.messages import InstallOutcome, InstallReport, ReleaseAnnouncement
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.notify import InstallReportListener
from tensorguard.fleet.topics import release_topic
from tensorguard.held_out import load_held_out_set, load_with_adapter
from tensorguard.model_card import MODEL_CARD_FILE
from tensorguard.sites import demo_site_registry
from tensorguard.tgsp import TrustStore, VerificationPolicy, verify_package
from tensorguard_assets.release import DEMO_EDGE_NODE
from tensorguard_assets.resources import build_resources
from tests.e2e.conftest import unique_fleet
from tests.e2e.mqtt_watch import SeenMessage, TopicRecorder
from tests.e2e.rounds import (
    StageRun,
    asset_metadata,
    development_process_env,
    failed_stages,
    round_asset_names,
    run_full_round,
    site_stage,
    tensorguard_env,
)
from tests.services.mosquitto import MosquittoBroker

pytestmark = pytest.mark.slow

ROUND = "2026-11-20"
CHANNEL = "stable"
AGENT_TIMEOUT_S = 30


@dataclass(frozen=True)
class CompletedRound:
    """A finished round: its runs, where its state lives, and what the broker carried."""

    instance: DagsterInstance
    env: dict[str, str]
    fleet: str
    stages: dict[str, StageRun]
    fleet_messages: list[SeenMessage]

    def release_metadata(self, asset_name: str) -> dict[str, Any]:
        return asset_metadata(self.stages, asset_name)

    @property
    def edge_node_dir(self) -> Path:
        return Path(self.env["TG_ARTIFACT_ROOT"]).parent / "edge" / DEMO_EDGE_NODE


@dataclass(frozen=True)
class EdgeInstall:
    """The demo edge node's agent after one ``run_once`` against the broker."""

    agent_config: dict[str, Any]
    agent: EdgeAgent
    reports: list[InstallReport]
    received: InstallReport

    @property
    def installed_dir(self) -> Path:
        return self.agent.layout.current_link(CHANNEL)


@pytest.fixture(scope="module")
def completed_round(
    tmp_path_factory: pytest.TempPathFactory,
    mosquitto_broker: MosquittoBroker,
    demo_sites: list[str],
) -> Iterator[CompletedRound]:
    """One full round, run once for this module, with a recorder on the fleet's topics."""
    fleet = unique_fleet("e2e-full")
    env = tensorguard_env(
        tmp_path_factory.mktemp("full-round"), fleet=fleet, broker=mosquitto_broker
    )
    with (
        development_process_env(),
        instance_for_test() as instance,
        TopicRecorder(mosquitto_broker, f"tensorguard/v1/{fleet}/#") as recorder,
    ):
        stages = run_full_round(instance, env, ROUND, demo_sites)
        assert all(run.success for run in stages.values()), failed_stages(stages)
        yield CompletedRound(instance, env, fleet, stages, recorder.wait_for_count(1, 5))


@pytest.fixture(scope="module")
def edge_install(completed_round: CompletedRound, mosquitto_broker: MosquittoBroker) -> EdgeInstall:
    """The demo node's agent, started from its provisioned agent.yaml, after one pass."""
    config_path = completed_round.edge_node_dir / "agent.yaml"
    agent = EdgeAgent.from_config(load_agent_config(config_path))
    version = int(completed_round.release_metadata("release")["version"])
    listener_settings = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port)
    with InstallReportListener(listener_settings, completed_round.fleet) as listener:
        reports = run_once(agent, timeout_s=AGENT_TIMEOUT_S)
        received = listener.wait_for(DEMO_EDGE_NODE, version, timeout=10)
    document = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    return EdgeInstall(document, agent, reports, received)


def test_every_asset_is_materialised_and_every_check_passes(
    completed_round: CompletedRound,
) -> None:
    expected = round_asset_names()
    materialised: set[str] = set()
    checks: dict[str, bool] = {}
    for run in completed_round.stages.values():
        materialised |= run.materialized_assets()
        checks |= run.check_results()
    assert materialised == expected
    assert [name for name, passed in checks.items() if not passed] == []
    # Every materialised asset ran its integrity check; the release's guards ran too.
    assert {f"{name}.artifact_integrity" for name in expected - {"release"}} <= set(checks)
    assert {
        "aggregated_update.quorum_met",
        "gate_decision.gate_passed",
        "tgsp_package.signature_verifies",
    } <= set(checks)


def test_each_site_adapter_improves_its_held_out_loss(
    completed_round: CompletedRound, demo_sites: list[str]
) -> None:
    for site in demo_sites:
        metadata = completed_round.stages[site_stage(site)].metadata("site_adapter")
        assert metadata["site"] == site
        assert metadata["eval_loss_after"] < metadata["eval_loss_before"], site
    aggregate = completed_round.release_metadata("aggregated_update")
    assert aggregate["accepted_count"] == len(demo_sites)
    assert aggregate["missing_sites"] == "none"


def test_release_is_announced_once_on_the_release_topic_and_retained(
    completed_round: CompletedRound, mosquitto_broker: MosquittoBroker
) -> None:
    release = completed_round.release_metadata("release")
    topic = release_topic(completed_round.fleet, CHANNEL)
    assert release["mqtt_topic"] == topic
    announcements = [m for m in completed_round.fleet_messages if m.topic == topic]
    assert len(announcements) == 1
    live = ReleaseAnnouncement.from_payload(announcements[0].payload)
    assert (live.version, live.digest) == (release["version"], release["digest"])
    with TopicRecorder(mosquitto_broker, topic) as late_subscriber:
        [retained] = late_subscriber.wait_for_count(1, timeout=5)
    assert retained.retain
    assert ReleaseAnnouncement.from_payload(retained.payload) == live


def test_release_is_in_the_registry_and_the_application_database(
    completed_round: CompletedRound,
) -> None:
    fleet = build_resources(completed_round.env)["fleet"]
    release = completed_round.release_metadata("release")
    gate = completed_round.release_metadata("gate_decision")
    [record] = fleet.registry.releases(CHANNEL)
    assert (record.version, record.digest) == (release["version"], release["digest"])
    assert sha256_file(fleet.registry.package_path(record)) == release["digest"]
    database = fleet.database()
    try:
        [row] = database.releases(completed_round.fleet, CHANNEL)
    finally:
        database.close()
    assert (row.version, row.digest, row.size) == (record.version, record.digest, record.size)
    assert row.gate_decision_digest == gate["decision_digest"]
    assert gate["passed"] is True


def test_edge_agent_installs_the_release_and_reports_success(
    completed_round: CompletedRound, edge_install: EdgeInstall, mosquitto_broker: MosquittoBroker
) -> None:
    assert edge_install.agent_config["mqtt"]["port"] == mosquitto_broker.port
    assert edge_install.agent_config["fleet"] == completed_round.fleet
    release = completed_round.release_metadata("release")
    [report] = edge_install.reports
    assert report.outcome is InstallOutcome.INSTALLED, report.reason
    assert (report.node_id, report.version, report.digest) == (
        DEMO_EDGE_NODE,
        release["version"],
        release["digest"],
    )
    assert edge_install.received == report
    assert edge_install.agent.state.high_water(CHANNEL) == release["version"]


def test_installed_files_match_the_verified_package_manifest(
    completed_round: CompletedRound, edge_install: EdgeInstall
) -> None:
    release = completed_round.release_metadata("release")
    trust_store = TrustStore.load(Path(edge_install.agent_config["trust_store"]))
    verified = verify_package(
        Path(release["path"]), trust_store, VerificationPolicy(expected_channel=CHANNEL)
    )
    manifest = {entry.path: entry for entry in verified.header.files}
    root = edge_install.installed_dir
    installed = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert installed == set(manifest)
    for path, entry in manifest.items():
        assert sha256_file(root / path) == entry.sha256, path
        assert (root / path).stat().st_size == entry.size, path
    weights = "global_adapter/adapter_model.safetensors"
    recorded_adapter = Path(completed_round.release_metadata("global_adapter")["path"])
    assert sha256_file(root / weights) == sha256_file(recorded_adapter / Path(weights).name)


def test_the_installed_model_card_describes_this_round_without_naming_sites(
    completed_round: CompletedRound, edge_install: EdgeInstall
) -> None:
    card = (edge_install.installed_dir / MODEL_CARD_FILE).read_text(encoding="utf-8")
    package = completed_round.release_metadata("tgsp_package")
    assert card == package["model_card"]
    assert MODEL_CARD_FILE in {entry["path"] for entry in package["package_files"]}
    gate = completed_round.release_metadata("gate_decision")
    assert gate["decision_digest"] in card
    assert gate["policy_digest"] in card
    rows = {line.split("|")[1].strip() for line in card.splitlines() if line.startswith("| ")}
    assert {criterion["name"] for criterion in gate["criteria"]} <= rows
    aggregate = completed_round.release_metadata("aggregated_update")
    sites = str(aggregate["accepted_sites"]).split(", ")
    assert f"| contributing sites | {len(sites)} |" in card
    root = edge_install.installed_dir
    documents = [p for p in root.rglob("*") if p.suffix in (".json", ".md", ".txt", ".yaml")]
    assert root / MODEL_CARD_FILE in documents
    assert not [
        (site, path.name) for path in documents for site in sites if site in path.read_text()
    ]
    assert f"| round | {ROUND} |" in card


def test_installed_global_adapter_loads_with_peft_and_beats_the_base_model(
    completed_round: CompletedRound, edge_install: EdgeInstall
) -> None:
    base_dir = Path(completed_round.stages["setup_job"].metadata("base_model")["path"])
    report = completed_round.release_metadata("evaluation_report")
    held_out = load_held_out_set(
        base_dir, {site: record.data_dir for site, record in demo_site_registry().items()}
    )
    model = load_with_adapter(base_dir, edge_install.installed_dir / "global_adapter")
    loss = held_out.loss(model)
    # The metadata shows 4 significant digits; the report file keeps full precision.
    losses = json.loads(Path(report["path"]).read_text(encoding="utf-8"))["losses"]
    assert loss == pytest.approx(losses["global_adapter"], rel=1e-5)
    assert loss == pytest.approx(report["eval_loss_global"], rel=1e-3)
    assert report["eval_loss_global"] < report["eval_loss_base"]
    assert report["held_out_sequences"] == len(held_out.sequences)
