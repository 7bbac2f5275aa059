"""Edge agent end to end: real Mosquitto, real registry, real TGSP packages."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tensorguard.fleet.agent import run_once, serve
from tensorguard.fleet.messages import (
    ConnectionMessage,
    ConnectionState,
    InstallOutcome,
    InstallReason,
    ReleaseAnnouncement,
)
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.notify import InstallReportListener, announce_release
from tensorguard.fleet.topics import connection_topic
from tensorguard.tgsp._format import PREAMBLE_SIZE
from tests.fleet.releases import FleetKit
from tests.fleet.test_mqtt import receive_with_raw_paho
from tests.services.mosquitto import MosquittoBroker, running_mosquitto

REPO_ROOT = Path(__file__).resolve().parents[2]


def broker_settings(broker: MosquittoBroker) -> dict[str, object]:
    """The agent configuration's ``mqtt`` section for the test broker."""
    return {"host": broker.host, "port": broker.port, "timeout_s": 5}


def mqtt_settings(broker: MosquittoBroker) -> MqttSettings:
    return MqttSettings.model_validate(broker_settings(broker))


def connection_state(broker: MosquittoBroker, fleet: str, node_id: str) -> ConnectionState:
    message = receive_with_raw_paho(broker, connection_topic(fleet, node_id))
    assert message.retain
    return ConnectionMessage.from_payload(bytes(message.payload)).state


def test_agent_installs_a_late_announced_release_and_reports_success(
    kit: FleetKit, tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    settings = mqtt_settings(mosquitto_broker)
    announcement = kit.publish(kit.build(1), 1)
    announce_release(settings, announcement)  # before the agent ever connects
    agent = kit.agent(tmp_path / "node", mqtt=broker_settings(mosquitto_broker))
    with InstallReportListener(settings, kit.fleet) as listener:
        reports = run_once(agent, timeout_s=10)
        received = listener.wait_for("robot-1", 1, timeout=5)
    assert [r.outcome for r in reports] == [InstallOutcome.INSTALLED]
    assert received == reports[0]
    assert received.digest == announcement.digest
    assert (agent.layout.current_link("stable") / "gate_decision.json").is_file()
    assert connection_state(mosquitto_broker, kit.fleet, "robot-1") is ConnectionState.OFFLINE
    # Connecting again finds the same retained release and has nothing to do.
    assert (
        run_once(kit.agent(tmp_path / "node", mqtt=broker_settings(mosquitto_broker)), timeout_s=10)
        == []
    )


Announcement = ReleaseAnnouncement
Prepare = Callable[[FleetKit, MqttSettings, Callable[[], None]], Announcement]


def _rollback(kit: FleetKit, settings: MqttSettings, run: Callable[[], None]) -> Announcement:
    old = kit.publish(kit.build(1), 1)
    announce_release(settings, kit.publish(kit.build(2), 2))
    run()
    return old


def _expired(kit: FleetKit, settings: MqttSettings, run: Callable[[], None]) -> Announcement:
    del settings, run  # the common Prepare signature; this case needs neither
    now = int(time.time())
    return kit.publish(kit.build(1, created_at=now - 7200, expires_at=now - 60), 1)


def _wrong_signer(kit: FleetKit, settings: MqttSettings, run: Callable[[], None]) -> Announcement:
    del settings, run  # the common Prepare signature; this case needs neither
    return kit.publish(kit.build(1, signer=kit.keys.stranger), 1)


def _bad_signature(kit: FleetKit, settings: MqttSettings, run: Callable[[], None]) -> Announcement:
    del settings, run  # the common Prepare signature; this case needs neither
    package = kit.build(1)
    data = bytearray(package.read_bytes())
    data[PREAMBLE_SIZE + 40] ^= 0x20
    package.write_bytes(bytes(data))
    return kit.publish(package, 1)


def _unsigned(kit: FleetKit, settings: MqttSettings, run: Callable[[], None]) -> Announcement:
    del settings, run  # the common Prepare signature; this case needs neither
    package = kit.root / "adapter.safetensors"
    package.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return kit.publish(package, 1)


@pytest.mark.parametrize(
    ("prepare", "reason", "fragment"),
    [
        (_rollback, InstallReason.ROLLBACK, "below the high-water mark 2"),
        (_expired, InstallReason.EXPIRED, "expired"),
        (_wrong_signer, InstallReason.UNTRUSTED_SIGNER, "not in the trust store"),
        (_bad_signature, InstallReason.BAD_SIGNATURE, "signature does not verify"),
        (_unsigned, InstallReason.UNSIGNED, "not a signed TGSP"),
    ],
    ids=["rollback", "expired", "wrong-signer", "bad-signature", "unsigned"],
)
def test_agent_rejects_and_says_why_over_mqtt(
    kit: FleetKit,
    tmp_path: Path,
    mosquitto_broker: MosquittoBroker,
    prepare: Prepare,
    reason: InstallReason,
    fragment: str,
) -> None:
    settings = mqtt_settings(mosquitto_broker)
    state_dir = tmp_path / "node"

    def run_agent() -> None:
        run_once(kit.agent(state_dir, mqtt=broker_settings(mosquitto_broker)), timeout_s=10)

    announcement = prepare(kit, settings, run_agent)
    before = kit.agent(state_dir).state
    announce_release(settings, announcement)
    with InstallReportListener(settings, kit.fleet) as listener:
        run_agent()
        report = listener.wait_for("robot-1", announcement.version, timeout=5)
    assert report.outcome is InstallOutcome.REJECTED
    assert report.reason_code is reason
    assert fragment in report.reason
    assert kit.agent(state_dir).state == before, "a rejection changes nothing on the node"


def test_agent_command_serves_until_sigterm(
    kit: FleetKit, tmp_path: Path, mosquitto_broker: MosquittoBroker
) -> None:
    settings = mqtt_settings(mosquitto_broker)
    config = kit.config(tmp_path / "node", mqtt=broker_settings(mosquitto_broker))
    config_path = tmp_path / "agent.yaml"
    config_path.write_text(yaml.safe_dump(config.model_dump(mode="json")), encoding="utf-8")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tensorguard.cli",
            "agent",
            "run",
            "--config",
            str(config_path),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        try:
            wait_for_state(mosquitto_broker, kit.fleet, ConnectionState.ONLINE, timeout=30)
        except AssertionError:
            agent.kill()
            raise AssertionError(f"agent output:\n{agent.communicate()[0]}") from None
        with InstallReportListener(settings, kit.fleet) as listener:
            announce_release(settings, kit.publish(kit.build(1), 1))
            first = listener.wait_for("robot-1", 1, timeout=20)
            announce_release(settings, kit.publish(kit.build(2), 2))
            second = listener.wait_for("robot-1", 2, timeout=20)
        assert (first.outcome, second.outcome) == (InstallOutcome.INSTALLED,) * 2
        os.kill(agent.pid, signal.SIGTERM)
        output, _ = agent.communicate(timeout=20)
        assert agent.returncode == 0, output
        assert "received SIGTERM" in output
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert connection_state(mosquitto_broker, kit.fleet, "robot-1") is ConnectionState.OFFLINE
    assert kit.agent(tmp_path / "node").state.high_water("stable") == 2


def connection_state_or_none(broker: MosquittoBroker, fleet: str) -> ConnectionState | None:
    try:
        message = receive_with_raw_paho(broker, connection_topic(fleet, "robot-1"), timeout=0.5)
    except queue.Empty:
        return None
    return ConnectionMessage.from_payload(bytes(message.payload)).state


def test_serving_agent_survives_a_broker_restart(kit: FleetKit, tmp_path: Path) -> None:
    """After the broker restarts (losing all state), the agent is ONLINE and subscribed again."""
    with running_mosquitto() as first:
        port = first.port
        agent = kit.agent(tmp_path / "node", mqtt=broker_settings(first))
        stop = threading.Event()
        server = threading.Thread(target=serve, args=(agent, stop), daemon=True)
        server.start()
        try:
            wait_for_state(first, kit.fleet, ConnectionState.ONLINE)
        except BaseException:
            stop.set()
            raise
    try:
        with running_mosquitto(port=port) as second:
            # A fresh broker has no retained messages: ONLINE comes from the reconnect.
            wait_for_state(second, kit.fleet, ConnectionState.ONLINE, timeout=30)
            settings = mqtt_settings(second)
            with InstallReportListener(settings, kit.fleet) as listener:
                announce_release(settings, kit.publish(kit.build(1), 1))
                report = listener.wait_for("robot-1", 1, timeout=20)
            assert report.outcome is InstallOutcome.INSTALLED
            stop.set()
            server.join(timeout=20)
            assert not server.is_alive()
            assert connection_state(second, kit.fleet, "robot-1") is ConnectionState.OFFLINE
    finally:
        stop.set()
        server.join(timeout=20)


def wait_for_state(
    broker: MosquittoBroker, fleet: str, state: ConnectionState, timeout: float = 20
) -> None:
    deadline = time.monotonic() + timeout
    while connection_state_or_none(broker, fleet) is not state:
        assert time.monotonic() < deadline, f"the agent did not become {state} in {timeout}s"
