"""Benchmark the fleet service: N simulated edge nodes posting signed telemetry on loopback.

Starts a real ``tensorguard serve`` (uvicorn, one process) on 127.0.0.1 with a fresh
SQLite application DB (or ``--database-url``), enrols N nodes with Ed25519 keys, then
runs N concurrent async clients (httpx) for ``--seconds``: each node signs and posts
telemetry messages back to back, every message with its own ``message_id``; a retry
(connection error, 429, 5xx) resends the *same* message id, as the edge agent does.

Reported: requests/s, p50/p95/p99 latency of the accepted posts, and the stored rows
checked against what the clients sent: **lost** (acknowledged as stored but not in the
DB) and **duplicated** (a message id stored twice, or more rows than acknowledged) must
both be 0. The baseline, measured in the same run against the same server with the same
concurrency, is ``GET /healthz`` (no auth, no DB write): the ratio says what signing,
verification, the nonce check and the idempotent insert cost per request.

    .venv/bin/python bench/bench_fleet_api.py                 # 32 nodes, 60 s
    .venv/bin/python bench/bench_fleet_api.py --nodes 8 --seconds 10

Results are printed and written to ``bench/results/fleet_api.json``. Not a test: no
timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tensorguard.service.request_signing import public_key_hex, sign_request
from tensorguard.service.settings import load_settings
from tensorguard.service.tokens import Role, issue_token

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "fleet_api.json"
BENCH_SECRET = "bench-fleet-api-secret-" + "b" * 32  # throwaway, this run only
RETRY_STATUSES = {429, 500, 502, 503, 504}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class NodeStats:
    """What one simulated node sent and what the service answered."""

    node_id: str
    stored: set[str] = field(default_factory=set)
    duplicates_acknowledged: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    retries: int = 0
    errors: list[str] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def start_server(tmp: Path, database_url: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TG_") and k != "DATABASE_URL"}
    env.update(
        {
            "TG_SECRET_KEY": BENCH_SECRET,
            "DATABASE_URL": database_url,
            "TG_RATE_LIMIT_PER_MINUTE": "100000000",
            "TG_RATE_LIMIT_BURST": "10000000",
            "TG_REGISTRY_ROOT": str(tmp / "registry"),
        }
    )
    log = tmp / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tensorguard", "serve", "--migrate", "--port", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return process, url, log
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"tensorguard serve did not become healthy; see {log}")


def enrol(url: str, token: str, count: int) -> list[tuple[str, Ed25519PrivateKey]]:
    nodes = []
    with httpx.Client(base_url=url, timeout=10) as client:
        for index in range(count):
            node_id, key = f"bench-{index:04d}-{uuid.uuid4().hex[:6]}", Ed25519PrivateKey.generate()
            body = {
                "node_id": node_id,
                "fleet": "bench",
                "channel": "stable",
                "cohort": "bench",
                "public_key": public_key_hex(key.public_key()),
            }
            response = client.post(
                "/v1/nodes", json=body, headers={"Authorization": f"Bearer {token}"}
            )
            if response.status_code != 201:
                raise SystemExit(f"enrolment refused: {response.status_code} {response.text}")
            nodes.append((node_id, key))
    return nodes


async def post_telemetry(
    client: httpx.AsyncClient, node_id: str, key: Ed25519PrivateKey, stats: NodeStats
) -> None:
    """Post one new message; retry it (same message id, fresh signature) until answered."""
    message_id = uuid.uuid4().hex
    path = f"/v1/nodes/{node_id}/telemetry"
    body = json.dumps(
        {
            "message_id": message_id,
            "sent_at": datetime.now(UTC).isoformat(),
            "installed_version": 1,
            "install_outcome": "installed",
            "inference_latency_ms": 12.5,
            "error_rate": 0.01,
            "safety_events": 0,
            "cpu_percent": 35.0,
            "memory_mb": 512.0,
        }
    ).encode()
    for _attempt in range(20):
        headers = {
            "Content-Type": "application/json",
            **sign_request(key, node_id, "POST", path, body),
        }
        start = time.perf_counter()
        try:
            response = await client.post(path, content=body, headers=headers)
        except httpx.TransportError as exc:
            stats.retries += 1
            stats.errors.append(type(exc).__name__)
            await asyncio.sleep(0.05)
            continue
        elapsed_ms = (time.perf_counter() - start) * 1000
        if response.status_code in RETRY_STATUSES:
            stats.retries += 1
            await asyncio.sleep(0.05)
            continue
        if response.status_code not in (200, 201):
            stats.errors.append(f"{response.status_code} {response.text[:120]}")
            return
        stats.latencies_ms.append(elapsed_ms)
        if response.json()["stored"]:
            stats.stored.add(message_id)
        else:
            stats.duplicates_acknowledged += 1
        return
    stats.errors.append(f"message {message_id} not accepted after 20 attempts")


async def node_loop(
    url: str, node_id: str, key: Ed25519PrivateKey, stop_at: float, stats: NodeStats
) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < stop_at:
            await post_telemetry(client, node_id, key, stats)


async def health_loop(url: str, stop_at: float, latencies: list[float]) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        while time.monotonic() < stop_at:
            start = time.perf_counter()
            response = await client.get("/healthz")
            if response.status_code == 200:
                latencies.append((time.perf_counter() - start) * 1000)


async def run_telemetry(
    url: str, nodes: list[tuple[str, Ed25519PrivateKey]], seconds: float
) -> tuple[list[NodeStats], float]:
    stats = [NodeStats(node_id) for node_id, _ in nodes]
    start = time.monotonic()
    stop_at = start + seconds
    await asyncio.gather(
        *(
            node_loop(url, node_id, key, stop_at, s)
            for (node_id, key), s in zip(nodes, stats, strict=True)
        )
    )
    return stats, time.monotonic() - start


async def run_health(url: str, clients: int, seconds: float) -> tuple[list[float], float]:
    latencies: list[float] = []
    start = time.monotonic()
    stop_at = start + seconds
    await asyncio.gather(*(health_loop(url, stop_at, latencies) for _ in range(clients)))
    return latencies, time.monotonic() - start


def stored_rows(database_path: Path) -> dict[str, list[str]]:
    """node id -> message ids stored (from the application DB itself)."""
    with sqlite3.connect(database_path) as connection:
        rows = connection.execute(
            "SELECT edge_nodes.node_id, telemetry_samples.message_id FROM telemetry_samples "
            "JOIN edge_nodes ON edge_nodes.id = telemetry_samples.node_pk"
        ).fetchall()
    found: dict[str, list[str]] = {}
    for node_id, message_id in rows:
        found.setdefault(node_id, []).append(message_id)
    return found


def summarise(latencies: list[float], count: int, wall_s: float) -> dict[str, float]:
    return {
        "requests": count,
        "requests_per_s": round(count / wall_s, 1),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p95_ms": round(percentile(latencies, 0.95), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else float("nan"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=32, help="simulated nodes (default 32)")
    parser.add_argument("--seconds", type=float, default=60.0, help="telemetry phase (60)")
    parser.add_argument(
        "--baseline-seconds", type=float, default=10.0, help="GET /healthz phase (10)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-fleet-api-") as tmp_name:
        tmp = Path(tmp_name)
        database = tmp / "fleet.db"
        database_url = f"sqlite:///{database}"
        process, url, log = start_server(tmp, database_url)
        try:
            settings = load_settings({"TG_SECRET_KEY": BENCH_SECRET, "DATABASE_URL": database_url})
            token = issue_token(settings, "bench", Role.OPERATOR, lifetime_s=3600)
            nodes = enrol(url, token, args.nodes)
            print(f"{args.nodes} nodes enrolled; posting telemetry for {args.seconds:g} s ...")
            stats, wall_s = asyncio.run(run_telemetry(url, nodes, args.seconds))
            print(f"baseline: GET /healthz, {args.nodes} clients, {args.baseline_seconds:g} s ...")
            health, health_wall_s = asyncio.run(run_health(url, args.nodes, args.baseline_seconds))
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        rows = stored_rows(database)
        server_log_tail = log.read_text(errors="replace").splitlines()[-5:]

    latencies = [value for s in stats for value in s.latencies_ms]
    acknowledged = sum(len(s.stored) for s in stats)
    lost = sum(len(s.stored - set(rows.get(s.node_id, []))) for s in stats)
    duplicated_rows = sum(len(ids) - len(set(ids)) for ids in rows.values())
    unacknowledged_rows = sum(len(set(rows.get(s.node_id, [])) - s.stored) for s in stats)
    telemetry = summarise(latencies, len(latencies), wall_s)
    baseline = summarise(health, len(health), health_wall_s)
    result: dict[str, Any] = {
        "benchmark": "fleet_api",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "nodes": args.nodes,
        "seconds": round(wall_s, 1),
        "database": "sqlite",
        "telemetry_post": telemetry,
        "baseline_healthz": baseline,
        "ratio_healthz_rps_over_telemetry_rps": round(
            baseline["requests_per_s"] / telemetry["requests_per_s"], 2
        )
        if telemetry["requests_per_s"]
        else None,
        "rows": {
            "acknowledged_stored": acknowledged,
            "in_database": sum(len(ids) for ids in rows.values()),
            "lost": lost,
            "duplicated": duplicated_rows,
            "stored_but_not_acknowledged": unacknowledged_rows,
            "acknowledged_as_duplicate": sum(s.duplicates_acknowledged for s in stats),
        },
        "retries": sum(s.retries for s in stats),
        "errors": sorted({e for s in stats for e in s.errors})[:10],
        "server_log_tail": server_log_tail,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"telemetry POST: {telemetry['requests_per_s']} req/s, p50 {telemetry['p50_ms']} ms, "
        f"p99 {telemetry['p99_ms']} ms ({telemetry['requests']} requests, {args.nodes} nodes, "
        f"{wall_s:.0f} s)"
    )
    print(
        f"baseline GET /healthz: {baseline['requests_per_s']} req/s, p50 {baseline['p50_ms']} "
        f"ms, p99 {baseline['p99_ms']} ms; ratio {result['ratio_healthz_rps_over_telemetry_rps']}x"
    )
    print(
        f"rows: {result['rows']['in_database']} stored, {lost} lost, {duplicated_rows} "
        f"duplicated, {unacknowledged_rows} stored without acknowledgement; "
        f"{result['retries']} retries; errors {result['errors']}"
    )
    print(f"written to {args.out}")
    return 0 if lost == 0 and duplicated_rows == 0 and not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
