"""Materialise assets with dagster-postgres storage on a real PostgreSQL server."""

from __future__ import annotations

from typing import Any

import sqlalchemy
from dagster import AssetKey, instance_for_test, materialize

from tensorguard_assets.partitions import round_site_key, site_partitions
from tensorguard_assets.training import site_dataset
from tests.assets.conftest import DEMO_ROUND
from tests.services.postgres import PostgresServer


def test_materialisation_is_recorded_in_postgres(
    postgres_server: PostgresServer, resources: dict[str, Any], demo_site_ids: list[str]
) -> None:
    overrides = {"storage": {"postgres": {"postgres_url": postgres_server.url}}}
    with instance_for_test(overrides=overrides) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        instance.add_dynamic_partitions(site_partitions.name, demo_site_ids)
        partition = round_site_key(DEMO_ROUND, demo_site_ids[0])
        result = materialize(
            [site_dataset], instance=instance, resources=resources, partition_key=partition
        )
        assert result.success
        run_id = result.run_id
        assert instance.get_latest_materialization_event(AssetKey("site_dataset")) is not None

    engine = sqlalchemy.create_engine(postgres_server.url)
    try:
        with engine.connect() as connection:
            status = connection.execute(
                sqlalchemy.text("SELECT status FROM runs WHERE run_id = :run_id"),
                {"run_id": run_id},
            ).scalar_one()
            materialized = connection.execute(
                sqlalchemy.text(
                    "SELECT asset_key, partition FROM event_logs WHERE run_id = :run_id "
                    "AND dagster_event_type = 'ASSET_MATERIALIZATION'"
                ),
                {"run_id": run_id},
            ).all()
    finally:
        engine.dispose()
    assert status == "SUCCESS"
    assert [(row.partition) for row in materialized] == [str(partition)]
    assert "site_dataset" in materialized[0].asset_key
