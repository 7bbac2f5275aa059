"""docs/OPERATIONS.md, "Production on one machine", performed (#17 Must show).

Production mode end to end, as an operator runs it: PostgreSQL for the Dagster instance
(deploy/dagster.postgres.yaml) and for the application DB, Mosquitto with a password file
and the shipped ACL, every key made with `tensorguard keys generate`, `tensorguard
preflight`, `dagster-webserver` + `dagster-daemon` with the round sensors started by
`dagster sensor start`, the round started with `tensorguard round start --setup`, the
collector (`tensorguard fleet collect`) running beside it, and one edge agent (`tensorguard
agent run`) with its own key store installing the release. Then: no configured secret in
the Dagster database (zlib blobs decompressed), the services' logs, the commands' output
or the state directory; and the application DB holds the node and its install report.

Every command below is quoted in the walkthrough (a check at the end keeps them equal).
Through the daemon the round takes several minutes on 2 cores (each sensor hands over at
most once a minute).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import sqlalchemy

from tensorguard.fleet.db import FleetDatabase
from tensorguard.training.demo_data import demo_sites_root
from tests.assets.test_secrets_stay_out_of_dagster import findings
from tests.round_start import TEST_ROUND_START
from tests.services.dagster_webserver import prepare_dagster_home, running_dagster_ui
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import PostgresServer, create_database

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO_ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OPERATIONS = REPO_ROOT / "docs" / "OPERATIONS.md"
SITES = ("hospital-north", "clinic-south")
PIPELINE_USER = "tensorguard-pipeline"
NODE = "robot-a"
ROUND = "2026-11-23"
ROUND_TIMEOUT_S = 3000
SENSORS = (
    ("round_progress_sensor", "tensorguard"),
    ("aggregation_sensor", "tensorguard-aggregator"),
    ("decryption_sensor", "tensorguard-custodian"),
)
DOCUMENTED: list[str] = []  # each command as the walkthrough writes it


def _secret() -> str:
    return secrets.token_urlsafe(40)


def run(documented: str, argv: list[str], env: Mapping[str, str], *, timeout: float = 300) -> str:
    """Run one walkthrough command (``documented`` is how OPERATIONS.md writes it)."""
    DOCUMENTED.append(documented)
    result = subprocess.run(
        argv, env=dict(env), cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{documented} failed ({result.returncode}):\n{output}"
    return output


def database_cells(url: str) -> Iterator[tuple[str, bytes]]:
    """Every cell of every table of a PostgreSQL database, zlib blobs decompressed."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            for table in sqlalchemy.inspect(connection).get_table_names():
                rows = connection.execute(sqlalchemy.text(f'SELECT * FROM "{table}"'))
                for row in rows:
                    for cell in row:
                        data = bytes(cell) if isinstance(cell, bytes | memoryview) else None
                        text = data if data is not None else str(cell).encode()
                        yield table, text
                        if data is not None:
                            with contextlib.suppress(zlib.error):
                                yield f"{table} (zlib)", zlib.decompress(data)
    finally:
        engine.dispose()


def files_under(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        yield str(path), path.read_bytes()


def wait_for_release(env: Mapping[str, str], timeout: float) -> list[dict[str, str]]:
    """Poll `tensorguard round status` until the release run succeeded (or a run failed)."""
    deadline = time.monotonic() + timeout
    stages: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        result = subprocess.run(
            [str(BIN / "tensorguard"), "round", "status", ROUND, "--json"],
            env=dict(env),
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        stages = json.loads(result.stdout)["stages"]
        failed = [row for row in stages if row["status"] in ("FAILURE", "CANCELED")]
        assert not failed, f"a round run failed: {failed}"
        if any(r["job"] == "round_release_job" and r["status"] == "SUCCESS" for r in stages):
            return stages
        time.sleep(15)
    raise AssertionError(f"the round did not finish in {timeout}s: {stages}")


def test_the_production_walkthrough_runs_and_leaks_no_secret(
    tmp_path: Path,
    postgres_server: PostgresServer,
    secured_mosquitto_broker: MosquittoBroker,
) -> None:
    assert secured_mosquitto_broker.access is not None
    passwords = secured_mosquitto_broker.access.users
    root = tmp_path / "srv"
    pub = root / "public"
    pub.mkdir(parents=True)
    masters = {party: _secret() for party in ("sites", "custodian", "release")}
    key_dirs = {party: root / "keys" / party for party in masters}
    fleet = f"plant-{secrets.token_hex(3)}"
    dagster_db, app_db = f"tg_dagster_{secrets.token_hex(3)}", f"tg_app_{secrets.token_hex(3)}"
    for name in (dagster_db, app_db):
        create_database(postgres_server, name)
    db_password = _secret()  # the test server trusts loopback; it must still never leak
    server = postgres_server
    # TG_ROUND_START: ROUND is a fixed date; the default start moves with the calendar.
    base = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
        "HOME": str(tmp_path),
        "TG_ROUND_START": TEST_ROUND_START,
    }
    production = {
        **base,
        "TG_ENVIRONMENT": "production",
        "TG_ARTIFACT_ROOT": str(root / "state" / "artifacts"),
        **{f"TG_KEY_MASTER_{party.upper()}": master for party, master in masters.items()},
        **{f"TG_KEY_DIR_{party.upper()}": str(path) for party, path in key_dirs.items()},
        "TG_SITES_FILE": str(root / "sites.yaml"),
        "TG_COORDINATOR_PUBLIC_KEY": str(pub / "coordinator.pub"),
        "TG_FLEET_RECIPIENTS_DIR": str(root / "recipients"),
        "TG_FLEET": fleet,
        "TG_MQTT_HOST": secured_mosquitto_broker.host,
        "TG_MQTT_PORT": str(secured_mosquitto_broker.port),
        "TG_MQTT_USERNAME": PIPELINE_USER,
        "TG_MQTT_PASSWORD": passwords[PIPELINE_USER],
        "DATABASE_URL": (
            f"postgresql://{server.user}:{db_password}@{server.host}:{server.port}/{app_db}"
        ),
        "DAGSTER_HOME": str(root / "dagster-home"),
        "TG_DAGSTER_PG_HOST": server.host,
        "TG_DAGSTER_PG_PORT": str(server.port),
        "TG_DAGSTER_PG_USER": server.user,
        "TG_DAGSTER_PG_PASSWORD": _secret(),
        "TG_DAGSTER_PG_DB": dagster_db,
    }
    tg = str(BIN / "tensorguard")

    def vault(party: str) -> dict[str, str]:
        return {
            **production,
            "TG_KEY_DIR": str(key_dirs[party]),
            "TG_KEY_MASTER": masters[party],
        }

    # 1. Keys, each in its party's vault.
    release = vault("release")
    run(
        "tensorguard keys generate --name release-signing",
        [tg, "keys", "generate", "--name", "release-signing"],
        release,
    )
    run(
        "tensorguard keys generate --name round-coordinator --public-out",
        [
            tg,
            "keys",
            "generate",
            "--name",
            "round-coordinator",
            "--public-out",
            str(pub / "coordinator.pub"),
        ],
        release,
    )
    run(
        "tensorguard keys generate --name fleet-collector-audit",
        [tg, "keys", "generate", "--name", "fleet-collector-audit"],
        release,
    )
    run(
        "tensorguard keys generate --name federation-custodian",
        [tg, "keys", "generate", "--name", "federation-custodian"],
        vault("custodian"),
    )
    entries = []
    for site in SITES:
        run(
            "tensorguard keys generate --name site-",
            [
                tg,
                "keys",
                "generate",
                "--name",
                f"site-{site}",
                "--public-out",
                str(pub / f"{site}.pub"),
            ],
            vault("sites"),
        )
        run(
            "--kind kem --public-out",
            [
                tg,
                "keys",
                "generate",
                "--name",
                f"site-{site}-kem",
                "--kind",
                "kem",
                "--public-out",
                str(pub / f"{site}.kem.pub"),
            ],
            vault("sites"),
        )
        entries.append(
            f"  - id: {site}\n    data_dir: {demo_sites_root() / site}\n"
            f"    public_key: public/{site}.pub\n    kem_public_key: public/{site}.kem.pub\n"
            "    max_weight: 300\n"
        )
    (root / "sites.yaml").write_text("sites:\n" + "".join(entries), encoding="utf-8")

    # 2. The edge node: its own key store, enrolled as a recipient; a trust store.
    node_master = _secret()
    node = {**base, "TG_KEY_DIR": str(tmp_path / "node" / "keys"), "TG_KEY_MASTER": node_master}
    run(
        "tensorguard keys generate --name robot-a --kind kem --public-out",
        [
            tg,
            "keys",
            "generate",
            "--name",
            NODE,
            "--kind",
            "kem",
            "--public-out",
            str(root / "recipients" / f"{NODE}.xwing.pub"),
        ],
        node,
    )
    run(
        "tensorguard keys show --name release-signing --public-out",
        [tg, "keys", "show", "--name", "release-signing", "--public-out", str(pub / "release.pub")],
        release,
    )
    trust_store = tmp_path / "node" / "trust-store.json"
    run(
        "tensorguard trust-store create",
        [tg, "trust-store", "create", str(trust_store), str(pub / "release.pub")],
        base,
    )
    agent_yaml = tmp_path / "node" / "agent.yaml"
    agent_yaml.write_text(
        f"node_id: {NODE}\nfleet: {fleet}\nchannels: [stable]\n"
        f"state_dir: {tmp_path / 'node' / 'state'}\ntrust_store: {trust_store}\n"
        f"recipient_key_name: {NODE}\n"
        f"mqtt: {{host: {secured_mosquitto_broker.host}, port: {secured_mosquitto_broker.port},"
        f" username: {NODE}}}\n",
        encoding="utf-8",
    )

    # 3. The instance on PostgreSQL, the preflight, the application DB schema.
    home = prepare_dagster_home(
        root / "dagster-home", REPO_ROOT / "deploy" / "dagster.postgres.yaml"
    )
    outputs = [run("tensorguard preflight", [tg, "preflight"], production)]

    # 4. The collector beside the pipeline (it also migrates the application DB).
    collector_log = tmp_path / "collector.log"
    DOCUMENTED.append("tensorguard fleet collect --migrate")
    with collector_log.open("wb") as log:
        collector = subprocess.Popen(
            [tg, "fleet", "collect", "--migrate"],
            env={**release},
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # 5. Webserver and daemon; the round sensors; the round.
        DOCUMENTED.extend(["dagster-webserver", "dagster-daemon run"])
        with running_dagster_ui(home, production, startup_timeout=300) as ui:
            # The three sensor starts load the workspace each: run them side by side.
            starts = []
            for sensor, location in SENSORS:
                DOCUMENTED.append(f"dagster sensor start {sensor} -w workspace.yaml -l {location}")
                starts.append(
                    subprocess.Popen(
                        [
                            str(BIN / "dagster"),
                            "sensor",
                            "start",
                            sensor,
                            "-w",
                            "workspace.yaml",
                            "-l",
                            location,
                        ],
                        env=production,
                        cwd=REPO_ROOT,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        text=True,
                    )
                )
            for start in starts:
                output, _ = start.communicate(timeout=600)
                assert start.returncode == 0, output
                outputs.append(output)
            started = time.monotonic()
            outputs.append(
                run(
                    "tensorguard round start",
                    [tg, "round", "start", ROUND, "--setup", "--webserver", ui.url],
                    production,
                    timeout=ROUND_TIMEOUT_S,
                )
            )
            try:
                stages = wait_for_release(production, ROUND_TIMEOUT_S)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{ui.log_tails()}") from None
            print(f"round through the daemon: {time.monotonic() - started:.0f} s")
            DOCUMENTED.append("tensorguard round status")
            service_logs = [
                (str(path), path.read_bytes())
                for path in (ui.webserver_log, ui.daemon_log)
                if path is not None
            ]
        assert {row["job"] for row in stages if row["status"] == "SUCCESS"} >= {
            "setup_job",
            "key_ceremony_job",
            "round_open_job",
            "site_training_job",
            "aggregation_job",
            "reveal_job",
            "decryption_job",
            "round_release_job",
        }

        # 6. The edge node installs the announced release.
        agent_env = {**node, "TG_MQTT_PASSWORD": passwords[NODE]}
        outputs.append(
            run(
                "tensorguard agent run --config agent.yaml --once",
                [tg, "agent", "run", "--config", str(agent_yaml), "--once", "--timeout", "60"],
                agent_env,
            )
        )
        [report] = [json.loads(line) for line in outputs[-1].splitlines() if line.startswith("{")]
        assert report["outcome"] == "installed", report
        time.sleep(5)  # the collector stores the retained report
    finally:
        collector.send_signal(signal.SIGTERM)
        collector.wait(timeout=60)
    collector_output = collector_log.read_text(encoding="utf-8")
    assert collector.returncode == 0, collector_output
    assert "collector stopped:" in collector_output

    # 7. The application DB holds the node and its install report.
    app_url = f"postgresql://{server.user}@{server.host}:{server.port}/{app_db}"
    database = FleetDatabase(app_url)
    try:
        stored_node = database.node(NODE)
        assert stored_node is not None
        assert (stored_node.fleet, stored_node.installed_version) == (fleet, 1)
        [stored] = database.install_reports(NODE)
        assert (stored.version, stored.outcome) == (1, "installed")
        [release_row] = database.releases(fleet, "stable")
        assert release_row.version == 1
    finally:
        database.close()

    # 8. No configured secret anywhere.
    secrets_by_name = {
        **{f"TG_KEY_MASTER_{p.upper()}": m for p, m in masters.items()},
        "node master": node_master,
        "database password": db_password,
        "TG_DAGSTER_PG_PASSWORD": production["TG_DAGSTER_PG_PASSWORD"],
        **{f"MQTT password of {user}": password for user, password in passwords.items()},
    }
    dagster_url = f"postgresql://{server.user}@{server.host}:{server.port}/{dagster_db}"
    scanned = [
        *database_cells(dagster_url),
        *database_cells(app_url),
        *service_logs,
        *files_under(root),
        *files_under(tmp_path / "node"),
        ("collector output", collector_output.encode()),
        *((f"command output {i}", text.encode()) for i, text in enumerate(outputs)),
    ]
    assert any(where.endswith("(zlib)") for where, _ in scanned), "no snapshot was scanned"
    found = [hit for where, blob in scanned for hit in findings(secrets_by_name, where, blob)]
    assert found == []

    # 9. The walkthrough quotes every command this test ran.
    walkthrough = OPERATIONS.read_text(encoding="utf-8")
    missing = [command for command in DOCUMENTED if command not in walkthrough]
    assert missing == []
    shutil.rmtree(root / "state" / "artifacts", ignore_errors=True)


def test_the_walkthrough_section_exists() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    assert re.search(r"^## Production on one machine", text, re.MULTILINE)
    assert "tests/e2e/test_operations_walkthrough.py" in text
