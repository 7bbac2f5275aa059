"""Edge agent install logic with real TGSP packages, without a broker."""

from __future__ import annotations

import json
import os
import tarfile
import time
from pathlib import Path

import pytest

from tensorguard.digest import sha256_file
from tensorguard.fleet.agent import EdgeAgent
from tensorguard.fleet.agent_config import load_agent_config
from tensorguard.fleet.agent_state import STATE_FILE
from tensorguard.fleet.errors import AgentConfigError, AgentError
from tensorguard.fleet.messages import InstallOutcome, InstallReason, ReleaseAnnouncement
from tensorguard.fleet.topics import release_topic
from tensorguard.tgsp._format import PREAMBLE_SIZE
from tests.fleet.releases import FleetKit


def installed_files(agent: EdgeAgent, channel: str = "stable") -> dict[str, bytes]:
    current = agent.layout.current_link(channel)
    return {
        p.relative_to(current).as_posix(): p.read_bytes()
        for p in sorted(current.rglob("*"))
        if p.is_file()
    }


def expect_refusal(
    agent: EdgeAgent, announcement: ReleaseAnnouncement, reason: InstallReason, fragment: str
) -> str:
    report = agent.handle_release(announcement)
    assert report is not None
    assert report.reason_code is reason, report.reason
    assert report.outcome is InstallOutcome.REJECTED
    assert fragment in report.reason
    return report.reason


def expect_installed(agent: EdgeAgent, announcement: ReleaseAnnouncement) -> None:
    """The agent installs ``announcement``: an INSTALLED report for its version."""
    report = agent.handle_release(announcement)
    assert report is not None
    assert (report.outcome, report.reason_code, report.version) == (
        InstallOutcome.INSTALLED,
        InstallReason.INSTALLED,
        announcement.version,
    ), report.reason
    assert agent.state.high_water(announcement.channel) == announcement.version


def test_installs_atomically_and_replaces_the_previous_release(
    kit: FleetKit, tmp_path: Path
) -> None:
    agent = kit.agent(tmp_path / "node")
    first_package = kit.build(1)
    report = agent.handle_release(kit.publish(first_package, 1))
    assert report is not None
    assert (report.outcome, report.reason_code, report.version) == (
        InstallOutcome.INSTALLED,
        InstallReason.INSTALLED,
        1,
    )
    assert report.node_id == "robot-1"
    assert report.fleet == kit.fleet
    first_dir = agent.layout.current_target("stable")
    assert first_dir is not None
    source_v1 = next((kit.root / "sources").glob("v1-*"))
    assert installed_files(agent) == {
        p.relative_to(source_v1).as_posix(): p.read_bytes()
        for p in sorted(source_v1.rglob("*"))
        if p.is_file()
    }
    assert agent.state.high_water("stable") == 1
    assert list(agent.layout.downloads.iterdir()) == [], "the download is removed"

    report = agent.handle_release(kit.publish(kit.build(2), 2))
    assert report is not None
    assert report.outcome is InstallOutcome.INSTALLED
    second_dir = agent.layout.current_target("stable")
    assert second_dir is not None
    assert second_dir != first_dir
    assert not first_dir.exists(), "the previous release is removed after the switch"
    assert json.loads(installed_files(agent)["gate_decision.json"])["version"] == 2
    # The high-water mark survives a restart.
    restarted = kit.agent(tmp_path / "node")
    assert restarted.state.high_water("stable") == 2
    saved = json.loads((tmp_path / "node" / STATE_FILE).read_text())
    assert saved["channels"]["stable"]["signer_key_id"] == (
        kit.keys.producer.public_key().fingerprint()
    )


def test_the_installed_release_seen_again_is_ignored(kit: FleetKit, tmp_path: Path) -> None:
    agent = kit.agent(tmp_path / "node")
    announcement = kit.publish(kit.build(1), 1)
    expect_installed(agent, announcement)
    assert agent.handle_release(announcement) is None


def test_rollback_and_replay_are_rejected(kit: FleetKit, tmp_path: Path) -> None:
    agent = kit.agent(tmp_path / "node")
    old = kit.publish(kit.build(1), 1)
    expect_installed(agent, old)
    expect_installed(agent, kit.publish(kit.build(2), 2))
    expect_refusal(agent, old, InstallReason.ROLLBACK, "below the high-water mark 2")
    # The same version with other bytes (a replay of a different signed package).
    same_version = old.model_copy(update={"version": 2})
    expect_refusal(agent, same_version, InstallReason.ROLLBACK, "refusing a replay")
    # An announcement that lies about the version: the signed version (1) decides.
    lying = old.model_copy(update={"version": 9})
    expect_refusal(agent, lying, InstallReason.ROLLBACK, "below the high-water mark 2")
    # A second, genuinely signed version-2 package: announced as 2 it is refused before
    # the download; announced as 3 the signed version (2, other digest) is refused.
    other_package = kit.build(2)
    other_two = old.model_copy(
        update={
            "version": 2,
            "digest": sha256_file(other_package),
            "size": other_package.stat().st_size,
            "location": other_package.as_uri(),
        }
    )
    expect_refusal(agent, other_two, InstallReason.ROLLBACK, "refusing a replay")
    disguised = other_two.model_copy(update={"version": 3})
    expect_refusal(agent, disguised, InstallReason.ROLLBACK, "refusing a replay")
    assert agent.state.high_water("stable") == 2
    assert json.loads(installed_files(agent)["gate_decision.json"])["version"] == 2


def test_announcement_version_must_match_the_signed_version(kit: FleetKit, tmp_path: Path) -> None:
    agent = kit.agent(tmp_path / "node")
    announcement = kit.publish(kit.build(1), 1).model_copy(update={"version": 4})
    expect_refusal(agent, announcement, InstallReason.ANNOUNCEMENT_MISMATCH, "version 1")
    assert agent.state.high_water("stable") is None
    assert agent.layout.current_target("stable") is None
    assert list((agent.layout.releases / "stable").iterdir()) == []


def test_expired_package_is_rejected(kit: FleetKit, tmp_path: Path) -> None:
    now = int(time.time())
    package = kit.build(1, created_at=now - 7200, expires_at=now - 3600)
    agent = kit.agent(tmp_path / "node")
    expect_refusal(agent, kit.publish(package, 1), InstallReason.EXPIRED, "expired")
    assert agent.state.high_water("stable") is None


def test_untrusted_signer_is_rejected(kit: FleetKit, tmp_path: Path) -> None:
    package = kit.build(1, signer=kit.keys.stranger)
    agent = kit.agent(tmp_path / "node")
    expect_refusal(
        agent, kit.publish(package, 1), InstallReason.UNTRUSTED_SIGNER, "not in the trust store"
    )


def test_tampered_signed_header_is_rejected(kit: FleetKit, tmp_path: Path) -> None:
    package = kit.build(1)
    data = bytearray(package.read_bytes())
    data[PREAMBLE_SIZE + 20] ^= 0x01  # inside the signed header
    package.write_bytes(bytes(data))
    agent = kit.agent(tmp_path / "node")
    expect_refusal(agent, kit.publish(package, 1), InstallReason.BAD_SIGNATURE, "does not verify")


def test_unsigned_archive_is_rejected(kit: FleetKit, tmp_path: Path) -> None:
    source = kit.root / "plain"
    source.mkdir(parents=True)
    (source / "adapter_model.safetensors").write_bytes(b"\0" * 512)
    archive = kit.root / "plain.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="adapter")
    agent = kit.agent(tmp_path / "node")
    expect_refusal(agent, kit.publish(archive, 1), InstallReason.UNSIGNED, "not a signed TGSP")


def test_package_for_another_node_or_channel_is_rejected(kit: FleetKit, tmp_path: Path) -> None:
    agent = kit.agent(tmp_path / "node")
    other_node = kit.publish(kit.build(1, recipient=kit.keys.other_node), 1)
    expect_refusal(agent, other_node, InstallReason.NOT_A_RECIPIENT, "not encrypted to this node")
    other_channel = kit.publish(kit.build(2, channel="beta"), 2)
    expect_refusal(agent, other_channel, InstallReason.WRONG_CHANNEL, "'beta'")


def test_fetch_refusals(kit: FleetKit, tmp_path: Path) -> None:
    agent = kit.agent(tmp_path / "node")
    announcement = kit.publish(kit.build(1), 1)
    for location in ("ftp://registry.example/stable-1.tgsp", "s3://bucket/x", "relative.tgsp"):
        remote = announcement.model_copy(update={"location": location})
        expect_refusal(agent, remote, InstallReason.UNSUPPORTED_LOCATION, "not supported")
    https = announcement.model_copy(update={"location": "https://registry.example/stable-1"})
    expect_refusal(agent, https, InstallReason.UNSUPPORTED_LOCATION, "none configured")
    wrong_digest = announcement.model_copy(update={"digest": "00" * 32})
    expect_refusal(agent, wrong_digest, InstallReason.DIGEST_MISMATCH, "SHA-256")
    wrong_size = announcement.model_copy(update={"size": announcement.size + 1})
    expect_refusal(agent, wrong_size, InstallReason.DIGEST_MISMATCH, "bytes")
    missing = announcement.model_copy(update={"location": (tmp_path / "gone.tgsp").as_uri()})
    report = agent.handle_release(missing)
    assert report is not None
    assert (report.outcome, report.reason_code) == (
        InstallOutcome.FAILED,
        InstallReason.FETCH_FAILED,
    )
    expect_installed(agent, announcement)  # the genuine one still installs


def test_payloads_not_for_this_node_are_ignored(kit: FleetKit, tmp_path: Path) -> None:
    agent = kit.agent(tmp_path / "node")
    announcement = kit.publish(kit.build(1), 1)
    topic = release_topic(kit.fleet, "stable")
    assert agent.handle_payload(topic, b"") is None
    assert agent.handle_payload(topic, b"{not json") is None
    assert agent.handle_payload(release_topic(kit.fleet, "beta"), announcement.to_payload()) is None
    other_fleet = announcement.model_copy(update={"fleet": "elsewhere"})
    assert agent.handle_release(other_fleet) is None
    assert agent.state.high_water("stable") is None
    report = agent.handle_payload(topic, announcement.to_payload())
    assert report is not None
    assert report.outcome is InstallOutcome.INSTALLED


def test_damaged_state_stops_the_agent(kit: FleetKit, tmp_path: Path) -> None:
    state_dir = tmp_path / "node"
    state_dir.mkdir()
    (state_dir / STATE_FILE).write_text('{"format": "tensorguard.agent-state/v1", "channels": 1}')
    with pytest.raises(AgentError, match="rollback protection depends on it"):
        kit.agent(state_dir)


def test_recover_removes_interrupted_installs(kit: FleetKit, tmp_path: Path) -> None:
    agent = kit.agent(tmp_path / "node")
    expect_installed(agent, kit.publish(kit.build(1), 1))
    current = agent.layout.current_target("stable")
    leftover_tree = agent.layout.releases / "stable" / "v2-deadbeef0000"
    leftover_tree.mkdir()
    (leftover_tree / "partial.bin").write_bytes(b"x")
    agent.layout.downloads.mkdir(exist_ok=True)
    (agent.layout.downloads / "stable-2.tgsp").write_bytes(b"partial")
    kit.agent(tmp_path / "node").recover()
    assert list((agent.layout.releases / "stable").iterdir()) == [current]
    assert list(agent.layout.downloads.iterdir()) == []


def test_config_file_with_an_mqtt_password_is_refused_without_showing_it(
    kit: FleetKit, tmp_path: Path
) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"node_id: robot-1\nfleet: {kit.fleet}\nchannels: [stable]\nstate_dir: {tmp_path}\n"
        f"trust_store: {kit.trust_store_path}\nrecipient_key_file: {kit.node_key_path}\n"
        "mqtt: {host: 127.0.0.1, username: robot-1, password: pw-not-shown-4711}\n",
        encoding="utf-8",
    )
    with pytest.raises(AgentConfigError, match="TG_MQTT_PASSWORD") as refused:
        load_agent_config(path)
    shown = [str(refused.value), repr(refused.value)]
    shown += [str(cause) for cause in (refused.value.__cause__, refused.value.__context__)]
    assert not [text for text in shown if "pw-not-shown-4711" in text]


def test_config_file_validation(kit: FleetKit, tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        f"node_id: robot-1\nfleet: {kit.fleet}\nchannels: [stable]\nstate_dir: {tmp_path}\n"
        f"trust_store: {kit.trust_store_path}\nrecipient_key_file: {kit.node_key_path}\n"
        "mqtt: {host: 127.0.0.1, port: 1883, username: robot-1}\n",
        encoding="utf-8",
    )
    config = load_agent_config(path)
    assert config.channels == ("stable",)
    assert config.mqtt.username == "robot-1"
    path.write_text(path.read_text() + "colour: blue\n", encoding="utf-8")
    with pytest.raises(AgentConfigError, match="colour"):
        load_agent_config(path)
    with pytest.raises(AgentConfigError, match="exactly one of recipient_key_file"):
        kit.config(tmp_path, recipient_key_name="robot-1")
    with pytest.raises(AgentConfigError, match="more than once"):
        kit.config(tmp_path, channels=["stable", "stable"])
    os.chmod(kit.node_key_path, 0o644)
    with pytest.raises(AgentConfigError, match="chmod 600"):
        kit.agent(tmp_path / "node")


def test_service_url_and_node_key_file_come_together(kit: FleetKit, tmp_path: Path) -> None:
    with pytest.raises(AgentConfigError, match="set both service_url and node_key_file"):
        kit.config(tmp_path / "a", service_url="http://127.0.0.1:8080")
    with pytest.raises(AgentConfigError, match="set both service_url and node_key_file"):
        kit.config(tmp_path / "b", node_key_file=str(tmp_path / "k.pem"))
    with pytest.raises(AgentConfigError, match="http"):
        kit.config(tmp_path / "c", service_url="ftp://fleet", node_key_file="/k.pem")
    config = kit.config(tmp_path / "d", service_url="http://fleet:8080/", node_key_file="/k.pem")
    assert config.service_url == "http://fleet:8080"
    with pytest.raises(AgentConfigError, match="node key"):
        EdgeAgent.from_config(config)  # /k.pem does not exist
