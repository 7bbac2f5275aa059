"""Production mode in a real Dagster run: missing secrets fail closed, present ones run."""

from __future__ import annotations

from typing import Any

import pytest
from dagster import DagsterInstance, materialize

from tensorguard_assets.partitions import round_site_key
from tensorguard_assets.training import site_dataset
from tests.assets.conftest import DEMO_ROUND

SECRETS = {
    "TG_SECRET_KEY": "k" * 48,
    "TG_KEY_MASTER": "m" * 48,
    "DATABASE_URL": "postgresql://tg@127.0.0.1:5432/tg",
}


def _failure_messages(result: Any) -> str:
    return "\n".join(
        str(event.event_specific_data.error.to_string())
        for event in result.all_events
        if event.is_failure and getattr(event.event_specific_data, "error", None) is not None
    )


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_missing_secret_fails_run_naming_the_variable(
    missing: str,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_instance: DagsterInstance,
    resources: dict[str, Any],
    demo_site_ids: list[str],
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    for name, value in SECRETS.items():
        if name != missing:
            monkeypatch.setenv(name, value)
    result = materialize(
        [site_dataset],
        instance=sqlite_instance,
        resources=resources,
        partition_key=round_site_key(DEMO_ROUND, demo_site_ids[0]),
        raise_on_error=False,
    )
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
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    result = materialize(
        [site_dataset],
        instance=sqlite_instance,
        resources=resources,
        partition_key=round_site_key(DEMO_ROUND, demo_site_ids[0]),
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("site_dataset")
    assert materialization.metadata["train_examples"].value > 0
