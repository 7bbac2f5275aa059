"""Edge agents download packages from a real ``tensorguard serve`` over loopback HTTP.

Signed, resumable downloads (Range/If-Range on the package digest), the digest checked
while streaming, unenrolled nodes refused; the package signature still decides.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tensorguard.fleet.agent import EdgeAgent
from tensorguard.fleet.messages import InstallOutcome, InstallReason, ReleaseAnnouncement
from tensorguard.fleet.notify import announcement_for
from tensorguard.fleet.registry import LocalRegistry
from tensorguard.service.node_key import write_node_key
from tensorguard.service.request_signing import sign_request
from tests.fleet.cutting_proxy import cutting_proxy
from tests.fleet.releases import FleetKit, Keys
from tests.service.conftest import SHARED_ENV, enrol
from tests.service.fleet_server import EdgeNode, FleetServer, running_fleet_server


@pytest.fixture(scope="module")
def registry_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The registry the test server serves (each test publishes on its own channel)."""
    return tmp_path_factory.mktemp("served-registry")


@pytest.fixture(scope="module")
def server(registry_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FleetServer]:
    """One real fleet service for this module, serving ``registry_root``."""
    tmp = tmp_path_factory.mktemp("download-service")
    with running_fleet_server(tmp, {**SHARED_ENV, "TG_REGISTRY_ROOT": str(registry_root)}) as s:
        yield s


@dataclass
class Release:
    """A published package, its announcement (pointing at ``base_url``) and its bytes."""

    announcement: ReleaseAnnouncement
    package: bytes
    path: Path


@pytest.fixture
def kit(tmp_path: Path, fleet_keys: Keys, registry_root: Path) -> FleetKit:
    """Keys and a trust store; releases go to the served registry on a fresh channel."""
    fleet_kit = FleetKit(tmp_path / "kit", fleet_keys, channel=f"c-{uuid.uuid4().hex[:8]}")
    fleet_kit.registry = LocalRegistry(registry_root)
    return fleet_kit


def release(kit: FleetKit, version: int, base_url: str) -> Release:
    """Build, publish and announce ``version`` with its location on ``base_url``."""
    record = kit.registry.publish(kit.build(version), kit.channel, version)
    announcement = announcement_for(kit.registry, record, kit.fleet, service_url=base_url)
    path = kit.registry.package_path(record)
    return Release(announcement, path.read_bytes(), path)


def agent_for(
    kit: FleetKit,
    server: FleetServer,
    tmp_path: Path,
    service_url: str | None = None,
    *,
    enrolled: bool = True,
) -> tuple[EdgeAgent, EdgeNode]:
    """An agent with its own node id, signing key (enrolled unless told) and state dir."""
    node = enrol(server, EdgeNode.new()) if enrolled else EdgeNode.new()
    key_file = tmp_path / f"{node.node_id}.pem"
    write_node_key(key_file, node.key)
    agent = kit.agent(
        tmp_path / node.node_id,
        node_id=node.node_id,
        service_url=service_url or server.url,
        node_key_file=str(key_file),
    )
    return agent, node


def partial_path(agent: EdgeAgent, announcement: ReleaseAnnouncement) -> Path:
    name = f"{announcement.channel}-{announcement.version}-{announcement.digest[:16]}.part"
    return agent.layout.downloads / name


def test_two_agents_download_and_install(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    published = release(kit, 1, server.url)
    assert published.announcement.location == f"{server.url}/v1/packages/{kit.channel}/1"
    for _ in range(2):
        agent, _node = agent_for(kit, server, tmp_path)
        report = agent.handle_release(published.announcement)
        assert report is not None
        assert report.outcome is InstallOutcome.INSTALLED, report.reason
        assert agent.state.channels[kit.channel].high_water_version == 1
        assert list(agent.layout.downloads.iterdir()) == []


def test_interrupted_download_resumes_with_a_range_request(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with cutting_proxy(port, cut_after=1500) as proxy:
        published = release(kit, 1, proxy.url)
        assert len(published.package) > 3000
        agent, _node = agent_for(kit, server, tmp_path, service_url=proxy.url)
        report = agent.handle_release(published.announcement)
    assert report is not None
    assert report.outcome is InstallOutcome.INSTALLED, report.reason
    assert len(proxy.request_heads) == 2
    first, second = (head.lower() for head in proxy.request_heads)
    assert "range:" not in first
    resumed_at = int(second.split("range: bytes=")[1].split("-")[0])
    assert 0 < resumed_at < len(published.package)
    assert f'if-range: "{published.announcement.digest}"' in second


def test_a_partial_file_from_an_earlier_run_is_resumed(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    with cutting_proxy(port, cut_after=0, cut=0) as proxy:
        published = release(kit, 1, proxy.url)
        agent, _node = agent_for(kit, server, tmp_path, service_url=proxy.url)
        partial = partial_path(agent, published.announcement)
        partial.parent.mkdir(parents=True)
        partial.write_bytes(published.package[:1000])
        agent.recover()  # a restart keeps partial downloads
        assert partial.exists()
        report = agent.handle_release(published.announcement)
    assert report is not None
    assert report.outcome is InstallOutcome.INSTALLED, report.reason
    assert len(proxy.request_heads) == 1
    assert "range: bytes=1000-" in proxy.request_heads[0].lower()
    assert not partial.exists()


def test_a_tampered_byte_fails_the_digest(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    published = release(kit, 1, server.url)
    agent, _node = agent_for(kit, server, tmp_path)
    tampered = bytearray(published.package)
    tampered[len(tampered) // 2] ^= 0x01
    published.path.write_bytes(bytes(tampered))  # same size: only the digest can tell
    report = agent.handle_release(published.announcement)
    assert report is not None
    assert (report.outcome, report.reason_code) == (
        InstallOutcome.REJECTED,
        InstallReason.DIGEST_MISMATCH,
    )
    assert "SHA-256" in report.reason
    assert not partial_path(agent, published.announcement).exists()
    assert kit.channel not in agent.state.channels


def test_a_tampered_partial_file_fails_the_digest_and_is_dropped(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    published = release(kit, 1, server.url)
    agent, _node = agent_for(kit, server, tmp_path)
    partial = partial_path(agent, published.announcement)
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\x00" * 1000)
    report = agent.handle_release(published.announcement)
    assert report is not None
    assert report.reason_code is InstallReason.DIGEST_MISMATCH, report.reason
    assert not partial.exists()
    retry = agent.handle_release(published.announcement)  # starts over and succeeds
    assert retry is not None
    assert retry.outcome is InstallOutcome.INSTALLED, retry.reason


def test_a_node_that_is_not_enrolled_is_refused(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    published = release(kit, 1, server.url)
    agent, stranger = agent_for(kit, server, tmp_path, enrolled=False)
    report = agent.handle_release(published.announcement)
    assert report is not None
    assert (report.outcome, report.reason_code) == (
        InstallOutcome.FAILED,
        InstallReason.FETCH_FAILED,
    )
    assert "401" in report.reason
    path = f"/v1/packages/{kit.channel}/1"
    assert requests.get(server.url + path, timeout=10).status_code == 401
    headers = sign_request(stranger.key, stranger.node_id, "GET", path)
    assert requests.get(server.url + path, headers=headers, timeout=10).status_code == 401


def test_a_location_outside_the_nodes_service_is_refused(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    published = release(kit, 1, "http://127.0.0.2:9")
    agent, _node = agent_for(kit, server, tmp_path)
    report = agent.handle_release(published.announcement)
    assert report is not None
    assert report.reason_code is InstallReason.UNSUPPORTED_LOCATION, report.reason
    assert "service_url" in report.reason


def test_http_location_without_a_configured_service_is_refused(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    published = release(kit, 1, server.url)
    agent = kit.agent(tmp_path / "plain")
    report = agent.handle_release(published.announcement)
    assert report is not None
    assert report.reason_code is InstallReason.UNSUPPORTED_LOCATION
    assert "service_url and node_key_file" in report.reason


def test_the_service_answers_ranges(kit: FleetKit, server: FleetServer) -> None:
    published = release(kit, 1, server.url)
    node = enrol(server, EdgeNode.new())
    path = f"/v1/packages/{kit.channel}/1"
    etag = f'"{published.announcement.digest}"'
    size = len(published.package)

    def get(**headers: str) -> requests.Response:
        signed = sign_request(node.key, node.node_id, "GET", path)
        return requests.get(server.url + path, headers={**signed, **headers}, timeout=10)

    whole = get()
    assert whole.status_code == 200
    assert whole.content == published.package
    assert whole.headers["ETag"] == etag
    assert whole.headers["Accept-Ranges"] == "bytes"
    part = get(Range="bytes=100-", **{"If-Range": etag})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-{size - 1}/{size}"
    assert part.content == published.package[100:]
    middle = get(Range="bytes=10-19")
    assert (middle.status_code, middle.content) == (206, published.package[10:20])
    changed = get(Range="bytes=100-", **{"If-Range": '"' + "0" * 64 + '"'})
    assert (changed.status_code, changed.content) == (200, published.package)
    past_end = get(Range=f"bytes={size}-")
    assert past_end.status_code == 416
    assert past_end.headers["Content-Range"] == f"bytes */{size}"
    unknown = sign_request(node.key, node.node_id, "GET", f"/v1/packages/{kit.channel}/2")
    missing = requests.get(f"{server.url}/v1/packages/{kit.channel}/2", headers=unknown, timeout=10)
    assert missing.status_code == 404


def test_a_package_larger_than_announced_is_refused(
    kit: FleetKit, server: FleetServer, tmp_path: Path
) -> None:
    published = release(kit, 1, server.url)
    smaller = published.announcement.model_copy(update={"size": len(published.package) - 100})
    agent, _node = agent_for(kit, server, tmp_path)
    report = agent.handle_release(smaller)
    assert report is not None
    assert report.reason_code is InstallReason.DIGEST_MISMATCH, report.reason
    assert "announcement says" in report.reason
    assert not partial_path(agent, smaller).exists()
