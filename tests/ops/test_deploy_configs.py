"""The example instance configs in deploy/ load as real Dagster instances."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.storage.dagster_run import DagsterRun
from dagster_celery.cli import get_validated_config
from dagster_k8s import K8sRunLauncher

from tests.services.postgres import PostgresServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# A kubeconfig naming a cluster that is never contacted: loading the launcher only reads it.
OFFLINE_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "nobody", "user": {}}],
    "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "nobody"}}],
    "current-context": "offline",
}


@pytest.fixture
def instance_env(postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The TG_DAGSTER_PG_* variables the deploy configs read, for the test server."""
    monkeypatch.setenv("TG_DAGSTER_PG_HOST", postgres_server.host)
    monkeypatch.setenv("TG_DAGSTER_PG_PORT", str(postgres_server.port))
    monkeypatch.setenv("TG_DAGSTER_PG_USER", postgres_server.user)
    monkeypatch.setenv("TG_DAGSTER_PG_PASSWORD", "unused-with-trust-auth")
    monkeypatch.setenv("TG_DAGSTER_PG_DB", postgres_server.database)


def _open_instance(config: dict[str, object], home: Path) -> DagsterInstance:
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return DagsterInstance.from_config(str(home))


@pytest.mark.postgres
@pytest.mark.usefixtures("instance_env")
def test_postgres_instance_config_loads(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(DEPLOY / "dagster.postgres.yaml", home / "dagster.yaml")
    instance = DagsterInstance.from_config(str(home))
    run_id = str(uuid.uuid4())
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        instance.add_run(DagsterRun(job_name="deploy_config_probe", run_id=run_id))
    finally:
        instance.dispose()
    # A second instance from the same file reads the run back: it lives in the server.
    reopened = DagsterInstance.from_config(str(home))
    try:
        stored = reopened.get_run_by_id(run_id)
        assert stored is not None
        assert stored.job_name == "deploy_config_probe"
        reopened.delete_run(run_id)
        assert reopened.get_run_by_id(run_id) is None
    finally:
        reopened.dispose()


@pytest.mark.postgres
@pytest.mark.usefixtures("instance_env")
def test_k8s_instance_config_loads(tmp_path: Path) -> None:
    config = yaml.safe_load((DEPLOY / "dagster.k8s.yaml").read_text(encoding="utf-8"))
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(OFFLINE_KUBECONFIG), encoding="utf-8")
    # Outside a pod there is no in-cluster service account: read the offline kubeconfig.
    config["run_launcher"]["config"] |= {
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }
    instance = _open_instance(config, tmp_path / "home")
    try:
        launcher = instance.run_launcher
        assert isinstance(launcher, K8sRunLauncher)
        assert launcher.job_namespace == "tensorguard"
        assert "TG_ARTIFACT_ROOT=/mnt/tensorguard/artifacts" in launcher.env_vars
        assert [m["mountPath"] for m in launcher.volume_mounts] == ["/mnt/tensorguard"]
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert instance.run_monitoring_enabled
    finally:
        instance.dispose()


def test_celery_worker_config_reads_the_broker_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    worker_yaml = DEPLOY / "celery-worker.yaml"
    raw = yaml.safe_load(worker_yaml.read_text(encoding="utf-8"))
    assert raw["execution"]["config"] == {"broker": {"env": "TG_CELERY_BROKER"}}
    monkeypatch.setenv("TG_CELERY_BROKER", "redis://celery-broker.internal:6379/0")
    assert (
        get_validated_config(str(worker_yaml))["broker"] == "redis://celery-broker.internal:6379/0"
    )
