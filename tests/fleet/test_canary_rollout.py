"""Telemetry-gated canary rollout, end to end: real Mosquitto, a real fleet service and
two edge agents that download packages from it over HTTP (the canary's download is cut
mid-body by a loopback proxy and resumed with Range) and report telemetry to it.

A canary that reports healthy telemetry is promoted and the other node installs the
release; a canary whose error rate breaches the policy is rolled back: the registry
revokes the release, and a rollback order signed with the release key makes the canary
reinstall the previous release (and never take the revoked one again).
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.deployment_approval import DeploymentApproval, sign_approval
from tensorguard.fleet.agent import EdgeAgent, serve
from tensorguard.fleet.canary import CanaryVerdict
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.messages import InstallOutcome, ReleaseAnnouncement
from tensorguard.fleet.models import AuditEvent
from tensorguard.fleet.mqtt import MqttSettings
from tensorguard.fleet.notify import InstallReportListener, announce_release, announcement_for
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.fleet.rollback_order import RollbackOrder, sign_rollback_order
from tensorguard.fleet.rollout import (
    PROMOTED,
    ROLLED_BACK,
    Rollout,
    RolloutLog,
    announce_to_canary,
    decide_rollout,
    promote,
    roll_back,
    rollout_of,
    start_rollout,
)
from tensorguard.gate.canary_policy import CanaryPolicy
from tensorguard.service.client import NodeClient
from tensorguard.service.errors import MissingApprovalError
from tensorguard.service.node_key import write_node_key
from tensorguard.service.request_signing import public_key_hex
from tensorguard.service.tokens import Role
from tensorguard.tgsp import TrustStore
from tensorguard.tgsp._freshness import verify_freshness
from tests.fleet.cutting_proxy import CuttingProxy, cutting_proxy
from tests.fleet.releases import FleetKit, Keys
from tests.service.conftest import SHARED_ENV
from tests.service.fleet_server import EdgeNode, FleetServer, running_fleet_server
from tests.services.mosquitto import MosquittoBroker

POLICY = CanaryPolicy(
    fraction=0.5,
    min_nodes_reporting=1,
    min_samples=3,
    observation_window_s=0,
    max_wait_s=600,
    max_error_rate=0.05,
    max_mean_latency_ms=None,
    max_safety_events=0,
    max_install_failures=0,
)
WINDOW_S = 900


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("canary-registry")


@pytest.fixture(scope="module")
def server(registry_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    tmp = tmp_path_factory.mktemp("canary-service")
    with running_fleet_server(tmp, {**SHARED_ENV, "TG_REGISTRY_ROOT": str(registry_root)}) as s:
        yield s


@dataclass
class Node:
    """An enrolled node, its agent and a client its robot software posts telemetry with."""

    edge: EdgeNode
    agent: EdgeAgent
    client: NodeClient

    @property
    def node_id(self) -> str:
        return self.edge.node_id

    def current_config(self) -> str:
        return (
            (self.agent.layout.current_target(self.agent.config.channels[0]) or Path("/x"))
            .joinpath("adapter", "adapter_config.json")
            .read_text()
        )


@dataclass
class Fleet:
    kit: FleetKit
    server: FleetServer
    mqtt: MqttSettings
    nodes: list[Node]
    database: FleetDatabase
    log: RolloutLog
    proxy: CuttingProxy

    def release(self, version: int) -> ReleaseAnnouncement:
        record = self.kit.registry.publish(self.kit.build(version), self.kit.channel, version)
        announcement = announcement_for(
            self.kit.registry, record, self.kit.fleet, service_url=self.proxy.url
        )
        self.database.record_release(
            self.kit.fleet, record, announcement.location, gate_decision_digest=None, actor="test"
        )
        return announcement

    def by_id(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.node_id == node_id)


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@contextmanager
def running_fleet(
    kit: FleetKit, server: FleetServer, broker: MosquittoBroker, tmp_path: Path
) -> Iterator[Fleet]:
    """Two enrolled nodes of the kit's fleet and channel, their agents serving."""
    mqtt = MqttSettings(host=broker.host, port=broker.port, timeout_s=5)
    upstream_port = int(server.url.rsplit(":", 1)[1])
    # the first download of v2 (the canary's) is cut mid-body and must be resumed
    proxy_context = cutting_proxy(
        upstream_port, cut_after=1500, cut=1, cut_path=f"/v1/packages/{kit.channel}/2 "
    )
    proxy = proxy_context.__enter__()
    nodes = []
    for index in range(2):
        edge = EdgeNode.new()
        body = {
            "node_id": edge.node_id,
            "fleet": kit.fleet,
            "channel": kit.channel,
            "cohort": "field",
            "public_key": public_key_hex(edge.key.public_key()),
        }
        assert server.post_json("/v1/nodes", body, token=server.token()).status_code == 201
        key_file = tmp_path / f"node-{index}.pem"
        write_node_key(key_file, edge.key)
        agent = kit.agent(
            tmp_path / f"state-{index}",
            node_id=edge.node_id,
            mqtt={"host": broker.host, "port": broker.port, "timeout_s": 5},
            service_url=proxy.url,
            node_key_file=str(key_file),
        )
        nodes.append(Node(edge, agent, NodeClient(server.url, edge.node_id, edge.key)))
    stop = threading.Event()
    threads = [threading.Thread(target=serve, args=(n.agent, stop), daemon=True) for n in nodes]
    database = FleetDatabase(server.settings.database_url)
    log = RolloutLog(tmp_path / "rollout-log.jsonl", kit.keys.producer.public_key())
    for thread in threads:
        thread.start()
    try:
        yield Fleet(kit, server, mqtt, nodes, database, log, proxy)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        database.close()
        proxy_context.__exit__(None, None, None)


@pytest.fixture
def kit(tmp_path: Path, fleet_keys: Keys, registry_root: Path) -> FleetKit:
    fleet_kit = FleetKit(tmp_path / "kit", fleet_keys, channel=f"c-{uuid.uuid4().hex[:8]}")
    fleet_kit.registry = LocalRegistry(registry_root)
    return fleet_kit


def _first_release_everywhere(fleet: Fleet) -> ReleaseAnnouncement:
    v1 = fleet.release(1)
    announce_release(fleet.mqtt, v1)
    _wait(lambda: all(n.agent.installed_version() == 1 for n in fleet.nodes), "v1 everywhere")
    return v1


def _canary(
    fleet: Fleet, *, approval_required: bool = False
) -> tuple[ReleaseAnnouncement, Rollout, Node, Node]:
    v2 = fleet.release(2)
    rollout = start_rollout(
        fleet.database,
        fleet=fleet.kit.fleet,
        channel=fleet.kit.channel,
        version=2,
        digest=v2.digest,
        previous_version=1,
        policy=POLICY,
        policy_digest="ab" * 32,
        actor="test",
        approval_required=approval_required,
    )
    assert len(rollout.canary_nodes) == 1  # half of two nodes
    announce_to_canary(fleet.mqtt, v2, rollout)
    canary = fleet.by_id(rollout.canary_nodes[0])
    other = next(n for n in fleet.nodes if n is not canary)
    _wait(lambda: canary.agent.installed_version() == 2, "the canary to install v2")
    v2_heads = [h.lower() for h in fleet.proxy.request_heads if f"/{v2.channel}/2 " in h]
    assert fleet.proxy.cuts_done == 1
    assert any("range: bytes=" in head for head in v2_heads[1:])  # resumed after the cut
    time.sleep(1.0)
    assert other.agent.installed_version() == 1  # the rest of the channel waits
    return v2, rollout, canary, other


def _decide(fleet: Fleet, rollout: Rollout) -> tuple[CanaryVerdict, tuple[str, ...]]:
    decision = decide_rollout(fleet.database, rollout, telemetry_window_s=WINDOW_S)
    return decision.verdict, decision.reasons


def _audit_actions(fleet: Fleet, subject: str) -> list[str]:
    with fleet.database.session() as session:
        return list(
            session.scalars(
                select(AuditEvent.action)
                .where(AuditEvent.subject == subject)
                .order_by(AuditEvent.id)
            ).all()
        )


def _approve(fleet: Fleet, release: ReleaseAnnouncement) -> None:
    """The approver 'ann' enrols and signs a deployment approval of ``release``."""
    key = CompositeSigningKey.generate()
    public = base64.b64encode(key.public_key().public_bytes()).decode()
    server = fleet.server
    body = {"name": "ann", "public_key": public}
    assert server.post_json("/v1/approvers", body, token=server.token()).status_code in (201, 409)
    approval = DeploymentApproval(
        fleet=release.fleet,
        channel=release.channel,
        version=release.version,
        release_digest=release.digest,
        approver="ann",
        approver_fingerprint=key.public_key().fingerprint(),
        approved_at="2026-12-02T23:30:00+00:00",
    )
    signed = sign_approval(approval, key).model_dump(mode="json")
    token = server.token(Role.OPERATOR, subject="ann")
    assert server.post_json("/v1/deployments", signed, token=token).status_code == 201


def test_a_healthy_canary_is_promoted_to_the_whole_channel(
    kit: FleetKit, server: FleetServer, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    with running_fleet(kit, server, mosquitto_broker, tmp_path) as fleet:
        _first_release_everywhere(fleet)
        v2, rollout, canary, other = _canary(fleet, approval_required=True)
        # the agent's own install telemetry alone is not enough (no error rate): wait
        verdict, reasons = _decide(fleet, rollout)
        assert verdict is CanaryVerdict.WAIT, reasons
        for _ in range(3):
            canary.client.post_telemetry(
                installed_version=2, inference_latency_ms=20.0, error_rate=0.01
            )
        verdict, reasons = _decide(fleet, rollout)
        assert verdict is CanaryVerdict.PROMOTE, reasons

        def _promote() -> Rollout:
            return promote(
                fleet.database,
                rollout,
                reasons,
                announcement=v2,
                mqtt=fleet.mqtt,
                log=fleet.log,
                signer=kit.keys.producer,
                actor="test",
            )

        # a robot channel's deployment needs a signed approval of this very release
        with pytest.raises(MissingApprovalError):
            _promote()
        _approve(fleet, v2)
        promoted = _promote()
        assert any("approved by 'ann'" in reason for reason in promoted.reasons)
        _wait(lambda: other.agent.installed_version() == 2, "the channel to install v2")
        assert promoted.status == PROMOTED
        assert rollout_of(fleet.database, kit.fleet, kit.channel, 2).status == PROMOTED
        assert _audit_actions(fleet, rollout.subject)[-3:] == [
            "rollout.started",
            "deployment.approved",
            "rollout.promoted",
        ]
        assert [r["event"] for r in fleet.log.records()] == ["rollout.promoted"]
        assert kit.registry.latest(kit.channel).version == 2  # type: ignore[union-attr]


def test_a_canary_with_errors_is_rolled_back_and_reinstalls_the_previous_release(
    kit: FleetKit, server: FleetServer, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> None:
    with running_fleet(kit, server, mosquitto_broker, tmp_path) as fleet:
        v1 = _first_release_everywhere(fleet)
        v2, rollout, canary, other = _canary(fleet)
        assert '"version": 2' in canary.current_config()
        for _ in range(3):
            canary.client.post_telemetry(installed_version=2, error_rate=0.4)
        verdict, reasons = _decide(fleet, rollout)
        assert verdict is CanaryVerdict.ROLLBACK
        assert any("max_error_rate" in reason for reason in reasons)
        # an order signed by another key changes nothing
        forged = sign_rollback_order(
            RollbackOrder(
                fleet=kit.fleet,
                channel=kit.channel,
                revoked_version=2,
                revoked_digest=v2.digest,
                restore=v1,
                reason="forged",
            ),
            kit.keys.stranger,
        )
        assert canary.agent.handle_rollback_payload(forged.to_payload()) is None
        assert canary.agent.installed_version() == 2
        rolled = roll_back(
            fleet.database,
            kit.registry,
            rollout,
            reasons,
            restore=v1,
            mqtt=fleet.mqtt,
            log=fleet.log,
            signer=kit.keys.producer,
            actor="test",
        )
        _wait(lambda: canary.agent.installed_version() == 1, "the canary to reinstall v1")
        assert '"version": 1' in canary.current_config()
        state = canary.agent.state.channels[kit.channel]
        assert (state.high_water_version, state.restored_version) == (2, 1)
        assert other.agent.installed_version() == 1
        assert rolled.status == ROLLED_BACK
        latest = kit.registry.latest(kit.channel)
        assert latest is not None
        assert latest.version == 1
        assert [r.revoked for r in kit.registry.releases(kit.channel)] == [False, True]
        document = kit.registry.freshness_document(kit.channel)
        assert document is not None
        freshness = verify_freshness(
            document,
            TrustStore([kit.keys.producer.public_key()]),
            channel=kit.channel,
            now=int(time.time()),
        )
        assert freshness.minimum_version == 1  # re-signed without the revoked release
        assert _audit_actions(fleet, rollout.subject)[-1] == "rollout.rolled_back"
        assert fleet.log.records()[0]["event"] == "rollout.rolled_back"
        # every node records the revocation; the revoked release announced again (a
        # replay) is refused by the node that never had it and ignored by the canary,
        # and the retained rollback order is not applied twice
        _wait(
            lambda: other.agent.state.is_revoked(kit.channel, 2, v2.digest),
            "the other node to record the revocation",
        )
        with InstallReportListener(fleet.mqtt, kit.fleet, kit.channel) as listener:
            announce_release(fleet.mqtt, v2)
            report = listener.wait_for(other.node_id, 2, timeout=15)
        assert report.outcome is InstallOutcome.REJECTED
        assert "revoked by a signed rollback order" in report.reason
        assert other.agent.installed_version() == 1
        assert canary.agent.installed_version() == 1
        assert canary.agent.handle_release(v2) is None
        assert canary.agent.installed_version() == 1
