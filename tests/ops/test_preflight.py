"""`tensorguard preflight`: every problem at once, exit 0 only when all is configured.

The configured deployment is real: key vaults made with `tensorguard keys generate`,
the suite's PostgreSQL (application DB and Dagster storage) and the password-protected
Mosquitto. Each breakage test plants one fault and expects exactly that check to fail.
"""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from dagster import Failure

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.preflight import Party, PreflightReport, run_preflight
from tensorguard.training.demo_data import demo_sites_root
from tensorguard_resources.runtime import TensorGuardRuntime
from tests.services.mosquitto import MosquittoBroker
from tests.services.postgres import PostgresServer

REPO_ROOT = Path(__file__).resolve().parents[2]
SITES = ("hospital-north", "clinic-south")
PIPELINE_USER = "tensorguard-pipeline"


def _secret() -> str:
    return secrets.token_urlsafe(40)


def _generate(environ: dict[str, str], *arguments: str) -> None:
    """`tensorguard keys generate ...` with ``environ`` as the whole TG_* environment."""
    with mock.patch.dict(os.environ, environ):
        assert main(["keys", "generate", *arguments]) == ExitCode.OK


def _vault(root: Path, master: str) -> dict[str, str]:
    return {"TG_KEY_DIR": str(root), "TG_KEY_MASTER": master}


@pytest.fixture(scope="module")
def configured(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer,
    secured_mosquitto_broker: MosquittoBroker,
) -> dict[str, str]:
    """A production environment in which every preflight check passes."""
    root = tmp_path_factory.mktemp("deployment")
    masters = {party: _secret() for party in ("sites", "custodian", "release")}
    key_dirs = {party: root / "keys" / party for party in masters}
    pub = root / "public"
    pub.mkdir()
    release = _vault(key_dirs["release"], masters["release"])
    _generate(release, "--name", "release-signing")
    _generate(release, "--name", "round-coordinator", "--public-out", str(pub / "coord.pub"))
    _generate(_vault(key_dirs["custodian"], masters["custodian"]), "--name", "federation-custodian")
    site_vault = _vault(key_dirs["sites"], masters["sites"])
    entries = []
    for site in SITES:
        _generate(site_vault, "--name", f"site-{site}", "--public-out", str(pub / f"{site}.pub"))
        kem_file = str(pub / f"{site}.kem.pub")
        _generate(
            site_vault, "--name", f"site-{site}-kem", "--kind", "kem", "--public-out", kem_file
        )
        entries.append(
            f"  - id: {site}\n    data_dir: {demo_sites_root() / site}\n"
            f"    public_key: public/{site}.pub\n    kem_public_key: public/{site}.kem.pub\n"
            "    max_weight: 300\n"
        )
    (root / "sites.yaml").write_text("sites:\n" + "".join(entries))
    recipients = root / "recipients"
    node_vault = _vault(root / "node-keys", _secret())
    _generate(
        node_vault,
        "--name",
        "robot-a",
        "--kind",
        "kem",
        "--public-out",
        str(recipients / "robot-a.xwing.pub"),
    )
    dagster_home = root / "dagster-home"
    dagster_home.mkdir()
    shutil.copy(REPO_ROOT / "deploy" / "dagster.postgres.yaml", dagster_home / "dagster.yaml")
    assert secured_mosquitto_broker.access is not None
    db_password = _secret()  # trust auth ignores it; it must still never be printed
    return {
        "TG_ENVIRONMENT": "production",
        "TG_ARTIFACT_ROOT": str(root / "state" / "artifacts"),
        **{f"TG_KEY_MASTER_{party.upper()}": master for party, master in masters.items()},
        **{f"TG_KEY_DIR_{party.upper()}": str(path) for party, path in key_dirs.items()},
        "TG_SITES_FILE": str(root / "sites.yaml"),
        "TG_COORDINATOR_PUBLIC_KEY": str(pub / "coord.pub"),
        "TG_FLEET_RECIPIENTS_DIR": str(recipients),
        "TG_MQTT_HOST": secured_mosquitto_broker.host,
        "TG_MQTT_PORT": str(secured_mosquitto_broker.port),
        "TG_MQTT_USERNAME": PIPELINE_USER,
        "TG_MQTT_PASSWORD": secured_mosquitto_broker.access.users[PIPELINE_USER],
        "DATABASE_URL": (
            f"postgresql://{postgres_server.user}:{db_password}@{postgres_server.host}:"
            f"{postgres_server.port}/{postgres_server.database}"
        ),
        "DAGSTER_HOME": str(dagster_home),
        "TG_DAGSTER_PG_HOST": postgres_server.host,
        "TG_DAGSTER_PG_PORT": str(postgres_server.port),
        "TG_DAGSTER_PG_USER": postgres_server.user,
        "TG_DAGSTER_PG_PASSWORD": _secret(),
        "TG_DAGSTER_PG_DB": postgres_server.database,
        "TG_SECRET_KEY": _secret(),
    }


def _secrets_of(environ: dict[str, str]) -> list[str]:
    names = ("MASTER", "PASSWORD", "SECRET_KEY")
    values = [value for name, value in environ.items() if any(n in name for n in names)]
    values.append(environ["DATABASE_URL"].split(":")[2].split("@")[0])  # the DB password
    return values


def _run_cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], environ: dict[str, str]
) -> tuple[int, str]:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    code = main(["preflight"])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_nothing_configured_in_production_lists_every_problem_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, output = _run_cli(monkeypatch, capsys, {"TG_ENVIRONMENT": "production"})
    assert code == ExitCode.PREFLIGHT
    fails = [line for line in output.splitlines() if line.startswith("FAIL")]
    expected = (
        "TG_SITES_FILE",
        "TG_COORDINATOR_PUBLIC_KEY",
        "DAGSTER_HOME is not set",
        "TG_KEY_MASTER_SITES",
        "TG_KEY_MASTER_RELEASE",
        "TG_KEY_MASTER_CUSTODIAN",
        "neither TG_KEY_DIR_SITES nor TG_KEY_DIR is set",
        "no *.xwing.pub",
        "TG_MQTT_HOST is not set",
        "DATABASE_URL is not set",
    )
    for problem in expected:
        assert any(problem in line for line in fails), (problem, output)
    assert "failed" in output.splitlines()[-2]  # the summary line before stderr's


def test_everything_configured_passes_and_prints_no_secret(
    configured: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, output = _run_cli(monkeypatch, capsys, configured)
    assert code == ExitCode.OK, output
    assert "FAIL" not in output
    assert f"as {PIPELINE_USER}" in output
    assert "PostgreSQL storage" in output
    assert output.count("authenticate") == 3  # the sites, release and custodian vaults
    for value in _secrets_of(configured):
        assert value not in output


def _failures(report: PreflightReport) -> dict[str, str]:
    return {check.name: check.message for check in report.failures}


def _broken(configured: dict[str, str], **changes: str | None) -> dict[str, str]:
    environ = dict(configured)
    for name, value in changes.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    return environ


@pytest.mark.parametrize(
    ("changes", "failing", "says"),
    [
        ({"TG_MQTT_PASSWORD": "wrong-password-123"}, "MQTT broker", "refused"),
        ({"TG_MQTT_USERNAME": None, "TG_MQTT_PASSWORD": None}, "MQTT broker", "refused"),
        ({"TG_MQTT_PORT": "1"}, "MQTT broker", "cannot reach"),
        ({"TG_KEY_MASTER_SITES": secrets.token_hex(32)}, "sites vault keys", "TG_KEY_MASTER"),
        ({"TG_KEY_MASTER_RELEASE": "password" * 4}, "release vault master", "24 bytes"),
        ({"TG_KEY_MASTER_CUSTODIAN": "a" * 64}, "custodian vault master", "repeat"),
        ({"TG_KEY_MASTER_RELEASE": "Xq7Zx9v"}, "release vault master", "shorter than 32"),
        ({"TG_RELEASE_KEY_NAME": "release-2027"}, "release vault keys", "release-2027"),
        ({"TG_SECRET_KEY": "too-short"}, "TG_SECRET_KEY", "shorter than 32"),
        ({"DATABASE_URL": "sqlite:///never-opened.db"}, "application database", "not PostgreSQL"),
        ({"TG_DAGSTER_PG_HOST": None}, "Dagster instance", "TG_DAGSTER_PG_HOST"),
        ({"TG_FLEET_RECIPIENTS_DIR": "/nonexistent/recipients"}, "fleet recipients", "enroll"),
        (
            {"TG_COORDINATOR_PUBLIC_KEY": "/nonexistent/coord.pub"},
            "TG_COORDINATOR_PUBLIC_KEY",
            "coord.pub",
        ),
        ({"TG_KEY_DIR_CUSTODIAN": None}, "custodian key directory", "TG_KEY_DIR_CUSTODIAN"),
        ({"TG_KEY_DIR_CUSTODIAN": "/nonexistent/c"}, "custodian key directory", "does not exist"),
        ({"TG_KEY_DIR_RELEASE": "SITES"}, "parties' secrets", "same key directory"),
    ],
)
def test_each_planted_fault_fails_its_own_check(
    configured: dict[str, str], changes: dict[str, str | None], failing: str, says: str
) -> None:
    if changes.get("TG_KEY_DIR_RELEASE") == "SITES":
        changes = {"TG_KEY_DIR_RELEASE": configured["TG_KEY_DIR_SITES"]}
    environ = _broken(configured, **changes)
    failures = _failures(run_preflight(tuple(Party), environ))
    assert failing in failures, failures
    assert says in failures[failing]
    for value in _secrets_of(configured):
        assert all(value not in message for message in failures.values())


def test_a_site_without_its_key_files_fails(configured: dict[str, str], tmp_path: Path) -> None:
    registry = Path(configured["TG_SITES_FILE"]).read_text()
    broken = tmp_path / "sites.yaml"
    broken.write_text(
        registry.replace(f"kem_public_key: public/{SITES[1]}.kem.pub", "").replace(
            "public/", f"{Path(configured['TG_SITES_FILE']).parent}/public/"
        )
    )
    failures = _failures(
        run_preflight((Party.AGGREGATOR,), _broken(configured, TG_SITES_FILE=str(broken)))
    )
    assert list(failures) == [f"site {SITES[1]}"]
    assert "no kem_public_key" in failures[f"site {SITES[1]}"]


def test_sqlite_is_allowed_only_by_the_single_machine_opt_in(
    configured: dict[str, str], tmp_path: Path
) -> None:
    sqlite = _broken(configured, DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}")
    assert "application database" in _failures(run_preflight((Party.COORDINATOR,), sqlite))
    allowed = _broken(sqlite, TG_ALLOW_SQLITE="single-machine")
    assert _failures(run_preflight((Party.COORDINATOR,), allowed)) == {}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    sqlite_instance = _broken(allowed, DAGSTER_HOME=str(tmp_path))
    assert _failures(run_preflight((Party.COORDINATOR,), sqlite_instance)) == {}
    refused = _broken(sqlite_instance, TG_ALLOW_SQLITE=None)
    assert set(_failures(run_preflight((Party.COORDINATOR,), refused))) == {
        "application database",
        "Dagster instance",
    }


def test_pkcs11_production_demands_no_master(configured: dict[str, str]) -> None:
    environ = {
        name: value for name, value in configured.items() if not name.startswith("TG_KEY_MASTER")
    }
    environ.update(
        {
            "TG_KEY_PROVIDER": "pkcs11",
            "TG_PKCS11_MODULE": "/nonexistent/libsofthsm2.so",
            **{
                f"TG_PKCS11_TOKEN_LABEL_{p}": f"tg-{p.lower()}"
                for p in ("SITES", "RELEASE", "CUSTODIAN")
            },
            "TG_PKCS11_PIN": "1234",
        }
    )
    report = run_preflight(tuple(Party), environ)
    assert not any("TG_KEY_MASTER" in check.message for check in report.failures), report.failures
    assert all(check.ok for check in report.checks if check.name.endswith("vault token"))


def test_each_party_checks_only_its_own_vaults(configured: dict[str, str]) -> None:
    no_masters = {n: v for n, v in configured.items() if not n.startswith("TG_KEY_MASTER")}
    aggregator = run_preflight((Party.AGGREGATOR,), no_masters)
    assert aggregator.ok, aggregator.failures
    custodian = run_preflight((Party.CUSTODIAN,), no_masters)
    assert [check.name for check in custodian.failures] == ["custodian vault master"]


def test_a_key_directory_others_can_read_fails(configured: dict[str, str]) -> None:
    key_dir = Path(configured["TG_KEY_DIR_CUSTODIAN"])
    key_dir.chmod(0o755)
    try:
        failures = _failures(run_preflight((Party.CUSTODIAN,), configured))
    finally:
        key_dir.chmod(0o700)
    assert list(failures) == ["custodian key directory"]
    assert f"chmod 700 {key_dir}" in failures["custodian key directory"]


def _launched_from(location: str) -> Any:
    """The parts of a Dagster resource context the run-start hook reads, for a run that
    ``location`` (a workspace code location) launched."""
    origin = SimpleNamespace(location_name=location)
    return SimpleNamespace(
        dagster_run=SimpleNamespace(remote_job_origin=origin), run=None, log=None
    )


def test_a_location_run_in_production_fails_at_start_with_every_problem_in_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    monkeypatch.setenv("TG_KEY_MASTER_SITES", "Zs8" * 16)
    with pytest.raises(Failure) as failure:
        TensorGuardRuntime().setup_for_execution(_launched_from("tensorguard"))
    message = str(failure.value.description)
    for problem in ("TG_SITES_FILE", "TG_KEY_MASTER_RELEASE", "TG_MQTT_HOST", "DATABASE_URL"):
        assert problem in message
    assert "Zs8" * 16 not in message
    assert failure.value.allow_retries is False


def test_a_location_run_starts_when_its_partys_preflight_passes(
    configured: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in configured.items():
        if not name.startswith("TG_KEY_MASTER"):  # the aggregator holds no master
            monkeypatch.setenv(name, value)
    TensorGuardRuntime().setup_for_execution(_launched_from("tensorguard-aggregator"))
    with pytest.raises(Failure, match="custodian vault master"):
        TensorGuardRuntime().setup_for_execution(_launched_from("tensorguard-custodian"))
