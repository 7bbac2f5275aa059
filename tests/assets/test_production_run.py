"""Production mode in a real Dagster run: missing secrets fail closed, present ones run."""

from __future__ import annotations

from secrets import token_hex
from typing import Any

import pytest
from dagster import DagsterInstance, materialize

from tensorguard_assets.partitions import round_site_key
from tensorguard_assets.training import site_dataset
from tests.assets.conftest import DEMO_ROUND

SECRETS = {  # production masters: hex of 32 random bytes (tensorguard.keys._master)
    "TG_KEY_MASTER_SITES": token_hex(32),
    "TG_KEY_MASTER_CUSTODIAN": token_hex(32),
    "TG_KEY_MASTER_RELEASE": token_hex(32),
    "DATABASE_URL": "postgresql://tg@127.0.0.1:5432/tg",
}


def _failure_messages(result: Any) -> str:
    return "\n".join(
        str(event.event_specific_data.error.to_string())
        for event in result.all_events
        if event.is_failure and getattr(event.event_specific_data, "error", None) is not None
    )


def _run_site_dataset(instance: DagsterInstance, resources: dict[str, Any], site_id: str) -> Any:
    """Materialise one site's dataset; a failed run is returned, not raised."""
    return materialize(
        [site_dataset],
        instance=instance,
        resources=resources,
        partition_key=round_site_key(DEMO_ROUND, site_id),
        raise_on_error=False,
    )


def _production_env(monkeypatch: pytest.MonkeyPatch, secrets: dict[str, str]) -> None:
    """Switch to production with ``secrets`` in the environment."""
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_missing_secret_fails_run_naming_the_variable(
    missing: str,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_instance: DagsterInstance,
    resources: dict[str, Any],
    demo_site_ids: list[str],
) -> None:
    _production_env(monkeypatch, {k: v for k, v in SECRETS.items() if k != missing})
    result = _run_site_dataset(sqlite_instance, resources, demo_site_ids[0])
    assert not result.success
    messages = _failure_messages(result)
    assert f"{missing} is not set" in messages
    for value in SECRETS.values():
        assert value not in messages


def test_all_secrets_present_runs(
    monkeypatch: pytest.MonkeyPatch,
    sqlite_instance: DagsterInstance,
    resources: dict[str, Any],
    demo_site_ids: list[str],
) -> None:
    _production_env(monkeypatch, SECRETS)
    result = _run_site_dataset(sqlite_instance, resources, demo_site_ids[0])
    assert result.success
    [materialization] = result.asset_materializations_for_node("site_dataset")
    assert materialization.metadata["train_examples"].value > 0


def test_parties_sharing_a_master_fail_the_run(
    monkeypatch: pytest.MonkeyPatch,
    sqlite_instance: DagsterInstance,
    resources: dict[str, Any],
    demo_site_ids: list[str],
) -> None:
    _production_env(
        monkeypatch, {**SECRETS, "TG_KEY_MASTER_RELEASE": SECRETS["TG_KEY_MASTER_SITES"]}
    )
    result = _run_site_dataset(sqlite_instance, resources, demo_site_ids[0])
    assert not result.success
    messages = _failure_messages(result)
    assert "TG_KEY_MASTER_SITES and TG_KEY_MASTER_RELEASE are the same master" in messages
    assert SECRETS["TG_KEY_MASTER_SITES"] not in messages
