"""The edge agent reports install outcomes and heartbeats to a real ``tensorguard serve``.

Real Mosquitto (MQTT reporting stays), real fleet service on loopback, real packages.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tensorguard.fleet.agent import EdgeAgent, run_once
from tensorguard.fleet.messages import InstallOutcome, InstallReason, InstallReport
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.notify import InstallReportListener, announce_release
from tensorguard.fleet.service_reports import ServiceReporter, telemetry_message
from tensorguard.service.client import NodeClient
from tensorguard.service.node_key import write_node_key
from tests.fleet.releases import FleetKit
from tests.service.conftest import SHARED_ENV, enrol
from tests.service.fleet_server import EdgeNode, FleetServer, running_fleet_server
from tests.services.mosquitto import MosquittoBroker
from tests.services.process import free_port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    """One real fleet service for this module."""
    with running_fleet_server(tmp_path_factory.mktemp("agent-service"), SHARED_ENV) as s:
        yield s


def service_agent(
    kit: FleetKit, server: FleetServer, broker: MosquittoBroker, tmp_path: Path
) -> tuple[EdgeAgent, EdgeNode]:
    """An enrolled node's agent with MQTT and the fleet service configured."""
    node = enrol(server, EdgeNode.new())
    key_file = tmp_path / "node.pem"
    write_node_key(key_file, node.key)
    agent = kit.agent(
        tmp_path / "node",
        node_id=node.node_id,
        mqtt={"host": broker.host, "port": broker.port, "timeout_s": 5},
        service_url=server.url,
        node_key_file=str(key_file),
    )
    return agent, node


def test_the_agent_posts_its_install_outcome_and_heartbeat(
    kit: FleetKit, tmp_path: Path, server: FleetServer, mosquitto_broker: MosquittoBroker
) -> None:
    settings = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port, timeout_s=5)
    agent, node = service_agent(kit, server, mosquitto_broker, tmp_path)
    before = server.get(f"/v1/nodes/{node.node_id}", token=server.token()).json()
    assert before["last_seen_at"] is None
    announce_release(settings, kit.publish(kit.build(1), 1))
    with InstallReportListener(settings, kit.fleet) as listener:
        reports = run_once(agent, timeout_s=10)
        mqtt_report = listener.wait_for(node.node_id, 1, timeout=5)  # MQTT reporting stays
    assert [r.outcome for r in reports] == [InstallOutcome.INSTALLED]
    assert mqtt_report == reports[0]
    assert agent.service_reporter is not None
    assert agent.service_reporter.pending == 0
    node_view = server.get(f"/v1/nodes/{node.node_id}", token=server.token()).json()
    assert node_view["last_seen_at"] is not None
    read = server.telemetry_summary(node.node_id)
    assert (read["samples"], read["install_failures"]) == (1, 0)


def test_a_rejected_install_is_reported_as_a_failure(
    kit: FleetKit, tmp_path: Path, server: FleetServer, mosquitto_broker: MosquittoBroker
) -> None:
    settings = MqttSettings(host=mosquitto_broker.host, port=mosquitto_broker.port, timeout_s=5)
    agent, node = service_agent(kit, server, mosquitto_broker, tmp_path)
    genuine = kit.publish(kit.build(1), 1)
    announce_release(settings, genuine.model_copy(update={"digest": "00" * 32}))
    reports = run_once(agent, timeout_s=10)
    assert [r.reason_code for r in reports] == [InstallReason.DIGEST_MISMATCH]
    read = server.telemetry_summary(node.node_id)
    assert (read["samples"], read["install_failures"]) == (1, 1)


def _report(node_id: str) -> InstallReport:
    return InstallReport(
        fleet="plant-a",
        channel="stable",
        node_id=node_id,
        version=4,
        digest="ab" * 32,
        outcome=InstallOutcome.INSTALLED,
        reason_code=InstallReason.INSTALLED,
        reason="installed",
    )


def test_a_report_posted_twice_is_stored_once(server: FleetServer) -> None:
    node = enrol(server, EdgeNode.new())
    reporter = ServiceReporter(NodeClient(server.url, node.node_id, node.key))
    report = _report(node.node_id)
    reporter.record(report, 4)
    reporter.record(report, 4)  # e.g. re-sent after a restart
    assert reporter.pending == 0
    assert server.telemetry_summary(node.node_id)["samples"] == 1
    assert (
        telemetry_message(report, 4)["message_id"]
        != telemetry_message(report.model_copy(update={"version": 5}), 4)["message_id"]
    )


def test_an_unreachable_service_keeps_the_outcome_for_later(server: FleetServer) -> None:
    node = enrol(server, EdgeNode.new())
    away = NodeClient(f"http://127.0.0.1:{free_port()}", node.node_id, node.key, backoff_s=0.01)
    now = [0.0]
    reporter = ServiceReporter(away, retry_interval_s=30, clock=lambda: now[0])
    reporter.record(_report(node.node_id), 4)
    assert reporter.pending == 1
    assert reporter.heartbeat(4) is False
    reporter.client = NodeClient(server.url, node.node_id, node.key)  # the service is back
    reporter.flush()  # too early: the agent's loop is not stalled by retries
    assert reporter.pending == 1
    now[0] = 30.0
    reporter.flush()
    assert reporter.pending == 0
    assert server.telemetry_summary(node.node_id)["samples"] == 1


def test_a_refused_outcome_is_dropped_and_logged(
    server: FleetServer, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = EdgeNode.new()  # not enrolled: 401, which no retry can fix
    reporter = ServiceReporter(NodeClient(server.url, stranger.node_id, stranger.key))
    with caplog.at_level(logging.ERROR):
        reporter.record(_report(stranger.node_id), 4)
    assert reporter.pending == 0
    assert "refused" in caplog.text


def test_heartbeats_are_sent_when_due(server: FleetServer) -> None:
    node = enrol(server, EdgeNode.new())
    now = [1000.0]
    reporter = ServiceReporter(
        NodeClient(server.url, node.node_id, node.key),
        heartbeat_interval_s=60,
        clock=lambda: now[0],
    )
    assert reporter.heartbeat(2) is True
    assert reporter.heartbeat(3) is False  # not due yet
    assert (
        server.get(f"/v1/nodes/{node.node_id}", token=server.token()).json()["installed_version"]
        == 2
    )
    now[0] += 60
    assert reporter.heartbeat(3) is True
    assert (
        server.get(f"/v1/nodes/{node.node_id}", token=server.token()).json()["installed_version"]
        == 3
    )


def test_an_agent_with_nothing_to_install_still_sends_a_heartbeat(
    kit: FleetKit, tmp_path: Path, server: FleetServer, mosquitto_broker: MosquittoBroker
) -> None:
    agent, node = service_agent(kit, server, mosquitto_broker, tmp_path)
    assert run_once(agent, timeout_s=1) == []  # no release on this fleet's channel
    node_view = server.get(f"/v1/nodes/{node.node_id}", token=server.token()).json()
    assert node_view["last_seen_at"] is not None
    no_telemetry = server.get(f"/v1/nodes/{node.node_id}/telemetry", token=server.token())
    assert no_telemetry.status_code == 503
