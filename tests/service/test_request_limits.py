"""Per-client rate limit: the token bucket alone, and 429 from a live server."""

from __future__ import annotations

from pathlib import Path

import requests

from tensorguard.service.rate_limit import TokenBucketLimiter, retry_after_header
from tests.service.fleet_server import FleetServer, running_fleet_server


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = FakeClock()
    limiter = TokenBucketLimiter(per_minute=60, burst=3, clock=clock)
    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a")
    assert 0.99 <= wait <= 1.0
    assert limiter.acquire("b") == 0.0  # clients are independent
    clock.now += 1.0
    assert limiter.acquire("a") == 0.0
    assert limiter.acquire("a") > 0
    clock.now += 3600
    assert [limiter.acquire("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at burst
    assert retry_after_header(0.2) == "1"
    assert retry_after_header(2.5) == "3"


def test_live_server_answers_429_beyond_the_burst(tmp_path: Path) -> None:
    env = {"TG_RATE_LIMIT_PER_MINUTE": "6", "TG_RATE_LIMIT_BURST": "3"}
    with running_fleet_server(tmp_path, env) as server:
        statuses = [server.get("/v1/nodes/robot-1").status_code for _ in range(5)]
        assert statuses[:3] == [401, 401, 401]
        assert statuses[3:] == [429, 429]
        refused = server.get("/v1/nodes/robot-1")
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) >= 1
        assert "rate limit" in refused.json()["detail"]
        assert server.get("/healthz").status_code == 200  # probes are exempt


def test_oversized_or_unsized_body_is_refused(fleet_server: FleetServer) -> None:
    limit = fleet_server.settings.max_body_bytes
    response = requests.post(
        fleet_server.url + "/v1/nodes",
        data=b"x" * (limit + 1),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 413
    chunked = requests.post(
        fleet_server.url + "/v1/nodes",
        data=iter([b"{", b"}"]),  # a generator: sent chunked, without Content-Length
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert chunked.status_code == 411
