"""No secret reaches what Dagster shows or stores, checked as an attacker would look.

A production-like environment gets distinctive random secrets: the application database
password inside ``DATABASE_URL``, ``TG_MQTT_PASSWORD``, ``TG_SECRET_KEY``, each party's
``TG_KEY_MASTER_<PARTY>`` and PKCS#11 PINs. Then every code location in workspace.yaml
is loaded the way a code server loads it, and the test searches, for every secret raw and
encoded (URL-quoted, hex, base64 at each byte alignment):

* the repository snapshot each location sends to the webserver (jobs with their config
  schema and defaults, the Resources page's configured values, sensors, schedules) and
  every job snapshot, serialised as Dagster stores them;
* a production run that uses the fleet resource for real (migrates the PostgreSQL
  application database with the password, connects to the password-protected broker):
  every file of the instance, with each SQLite cell read and zlib blobs (the snapshots
  table) decompressed, the run record, its event log, and the captured output and logs.

The snapshot test failed before ``DATABASE_URL`` left the fleet resource's config.
"""

# No "from __future__ import annotations": Dagster resolves the probe asset's context and
# resource annotations at definition time.
import base64
import contextlib
import logging
import os
import runpy
import secrets
import sqlite3
import string
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy
import yaml
from dagster import (
    AssetExecutionContext,
    Definitions,
    asset,
    instance_for_test,
    materialize,
    serialize_value,
)

# Tests may use Dagster internals: this is the snapshot the code server sends to the UI.
from dagster._core.remote_representation.external_data import RepositorySnap

from tensorguard.fleet.mqtt import MqttConnection
from tensorguard_assets.resources import build_resources
from tensorguard_resources.fleet import FleetResource
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import PostgresServer

ROOT = Path(__file__).resolve().parents[2]
ALPHABET = string.ascii_letters + string.digits


def distinctive_secret(length: int = 40) -> str:
    """A random secret that cannot occur by chance (letters and digits: no escaping)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def base64_fragments(value: bytes) -> Iterator[bytes]:
    """The base64 characters that depend only on ``value``, wherever it starts in a larger
    encoded blob (three byte alignments; standard and URL-safe alphabets)."""
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + value)
        first = -(-8 * offset // 6)  # the first character made only of value's bits
        last = 8 * (offset + len(value)) // 6
        fragment = encoded[first:last]
        yield fragment
        yield fragment.replace(b"+", b"-").replace(b"/", b"_")


def encodings(secret: str) -> dict[str, bytes]:
    """``secret`` as it could be written down: raw, URL-quoted, hex, base64."""
    raw = secret.encode()
    forms = {
        "raw": raw,
        "urlquoted": quote(secret, safe="").encode(),
        "urlquoted+": quote_plus(secret).encode(),
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
    }
    forms |= {f"base64[{i}]": form for i, form in enumerate(base64_fragments(raw))}
    return forms


def findings(secrets_by_name: Mapping[str, str], where: str, blob: bytes | str) -> list[str]:
    """``name (encoding) in where`` for every secret found in ``blob``."""
    data = blob.encode() if isinstance(blob, str) else blob
    return [
        f"{name} ({form}) in {where}"
        for name, secret in secrets_by_name.items()
        for form, encoded in encodings(secret).items()
        if encoded in data
    ]


def sqlite_cells(path: Path) -> Iterator[tuple[str, bytes]]:
    """Every cell of every table, zlib-compressed blobs decompressed as well."""
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master")]
        for table in tables:
            try:
                rows = connection.execute(f'SELECT * FROM "{table}"').fetchall()
            except sqlite3.DatabaseError:
                continue  # an index or trigger name, not a table
            for row in rows:
                for cell in row:
                    data = cell if isinstance(cell, bytes) else str(cell).encode()
                    yield table, data
                    with contextlib.suppress(zlib.error):
                        yield f"{table} (zlib)", zlib.decompress(data)
    finally:
        connection.close()


def stored_files(directory: Path) -> Iterator[tuple[str, bytes]]:
    """Every file under ``directory``; SQLite databases cell by cell too."""
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        data = path.read_bytes()
        yield str(path.relative_to(directory)), data
        if data.startswith(b"SQLite format 3\0"):
            for table, cell in sqlite_cells(path):
                yield f"{path.relative_to(directory)}:{table}", cell


@asset
def fleet_probe(context: AssetExecutionContext, fleet: FleetResource) -> str:
    """Uses both secrets for real: the database and the broker."""
    database = fleet.database()
    try:
        with database.engine.connect() as connection:
            tables = set(sqlalchemy.inspect(connection).get_table_names())
    finally:
        database.close()
    settings = fleet.mqtt
    assert settings is not None
    with MqttConnection(settings, "secrets-probe") as broker:
        connected = broker.is_connected
    context.log.info(f"fleet database has {len(tables)} tables; broker connected")
    return f"{sorted(tables)} {connected}"


@pytest.fixture
def production_secrets(
    postgres_server: PostgresServer,
    secured_mosquitto_broker: MosquittoBroker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, str]:
    """A production environment with random secrets; returns the secrets by name."""
    database = f"tg_secrets_{secrets.token_hex(4)}"
    engine = sqlalchemy.create_engine(postgres_server.url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{database}"'))
    engine.dispose()
    db_password = distinctive_secret()
    database_url = (
        f"postgresql://{postgres_server.user}:{db_password}@{postgres_server.host}:"
        f"{postgres_server.port}/{database}"
    )
    assert secured_mosquitto_broker.access is not None
    environment_secrets = {
        "DATABASE_URL": database_url,
        "TG_MQTT_PASSWORD": secured_mosquitto_broker.access.users["tensorguard-pipeline"],
        "TG_SECRET_KEY": distinctive_secret(48),
        "TG_KEY_MASTER_SITES": distinctive_secret(48),
        "TG_KEY_MASTER_CUSTODIAN": distinctive_secret(48),
        "TG_KEY_MASTER_RELEASE": distinctive_secret(48),
        "TG_PKCS11_PIN": distinctive_secret(),
        "TG_PKCS11_PIN_RELEASE": distinctive_secret(),
    }
    settings = {
        "TG_ENVIRONMENT": "production",
        "TG_ARTIFACT_ROOT": str(tmp_path / "state" / "artifacts"),
        "TG_MQTT_HOST": secured_mosquitto_broker.host,
        "TG_MQTT_PORT": str(secured_mosquitto_broker.port),
        "TG_MQTT_USERNAME": "tensorguard-pipeline",
    }
    for name, value in {**settings, **environment_secrets}.items():
        monkeypatch.setenv(name, value)
    return environment_secrets | {"database password": db_password}


def workspace_definitions() -> dict[str, Definitions]:
    """Each code location of workspace.yaml, loaded as a code server loads it: by running
    its module (in a fresh namespace) with the current environment."""
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text(encoding="utf-8"))
    loaded = {}
    for entry in workspace["load_from"]:
        module = entry["python_module"]
        namespace = runpy.run_module(module["module_name"], run_name="__code_server__")
        definitions = namespace["defs"]
        assert isinstance(definitions, Definitions)
        loaded[module.get("location_name", module["module_name"])] = definitions
    return loaded


def test_snapshots_and_the_ui_resource_view_hold_no_secret(
    production_secrets: dict[str, str],
) -> None:
    locations = workspace_definitions()
    assert locations, "workspace.yaml loads no code location"
    found: list[str] = []
    fleet_seen = False
    for location, definitions in locations.items():
        repository = definitions.get_repository_def()
        snapshot = RepositorySnap.from_def(repository)
        fleet_seen |= any(resource.name == "fleet" for resource in snapshot.resources)
        found += findings(
            production_secrets, f"{location} repository snapshot", serialize_value(snapshot)
        )
        for job in repository.get_all_jobs():
            serialized = serialize_value(job.get_job_snapshot())
            found += findings(production_secrets, f"{location} job {job.name}", serialized)
    assert fleet_seen, "no location shows the fleet resource: the scan would prove nothing"
    assert found == []


def test_a_production_run_stores_and_logs_no_secret(
    production_secrets: dict[str, str],
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    instance_dir = tmp_path / "instance"
    instance_dir.mkdir()
    with instance_for_test(temp_dir=str(instance_dir)) as instance:
        result = materialize(
            [fleet_probe],
            instance=instance,
            resources={"fleet": build_resources()["fleet"]},
            raise_on_error=False,
        )
        assert result.success, [str(event) for event in result.all_events if event.is_failure]
        assert "edge_nodes" in result.output_for_node("fleet_probe")
        assert "True" in result.output_for_node("fleet_probe")
        run = instance.get_run_by_id(result.run_id)
        assert run is not None
        records = instance.all_logs(result.run_id)
        stored = {
            "run record": serialize_value(run),
            "event log": serialize_value(records),
            "run config": serialize_value(run.run_config),
        }
        if run.job_snapshot_id is not None:
            stored["stored job snapshot"] = serialize_value(
                instance.get_job_snapshot(run.job_snapshot_id)
            )
    captured = capfd.readouterr()
    scanned = [
        *stored.items(),
        *stored_files(instance_dir),
        ("stdout", captured.out),
        ("stderr", captured.err),
        ("python logs", caplog.text),
    ]
    # The scan reaches the fleet resource's stored config, decompressed: a set variable is
    # stored by name (an EnvVar the run resolved), a derived path by value.
    registry_root = str(Path(os.environ["TG_ARTIFACT_ROOT"]).parent / "registry").encode()
    for stored_config in (b"TG_MQTT_USERNAME", registry_root):
        assert any(where.endswith("(zlib)") and stored_config in blob for where, blob in scanned)
    found = [
        finding for where, blob in scanned for finding in findings(production_secrets, where, blob)
    ]
    assert len(stored) == 4
    assert found == []


def test_the_scan_finds_planted_secrets(tmp_path: Path) -> None:
    secret = distinctive_secret()
    planted = {"s": secret}
    prefix_lengths = range(3)
    for prefix in prefix_lengths:
        blob = b"x" * prefix + secret.encode()
        assert findings(planted, "b64", base64.b64encode(blob))
        assert findings(planted, "b64url", base64.urlsafe_b64encode(blob))
    assert findings(planted, "hex", f"a{secret.encode().hex().upper()}b")
    database = tmp_path / "planted.db"
    with sqlite3.connect(database) as connection:
        connection.execute("CREATE TABLE snapshots (body BLOB)")
        connection.execute("INSERT INTO snapshots VALUES (?)", (zlib.compress(secret.encode()),))
    connection.close()
    assert not findings(planted, "raw file", database.read_bytes())
    assert [where for where, blob in stored_files(tmp_path) if findings(planted, where, blob)] == [
        "planted.db:snapshots (zlib)"
    ]
    assert not findings(planted, "nothing", distinctive_secret() * 3)
