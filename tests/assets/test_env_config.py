"""Resource configuration as Dagster ``EnvVar`` references on the deployment path (#10).

A code location builds its resources from ``os.environ`` with every set ``TG_*`` variable
as an ``EnvVar``: the UI and the snapshot show the variable's name, and each run resolves
the value from its own environment when it starts. An explicit mapping (tests, in-process
tools) gives literal values; unset variables keep the fields' defaults; a resource that
still holds a reference refuses to be read outside a run.
"""

# No "from __future__ import annotations": Dagster resolves the probe asset's resource
# annotations at definition time.
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import (
    EnvVar,
    asset,
    build_sensor_context,
    instance_for_test,
    materialize,
    serialize_value,
)

# Tests may use Dagster internals: this is the snapshot the code server sends to the UI.
from dagster._core.remote_representation.external_data import (
    RepositorySnap,
    ResourceConfigEnvVarSnap,
)

from tensorguard_assets.locations import (
    AGGREGATOR,
    COORDINATOR,
    CUSTODIAN,
    Federation,
    all_in_one_definitions,
)
from tensorguard_assets.resources import build_resources
from tensorguard_resources import ArtifactStore
from tensorguard_resources.fleet import FleetResource

# Distinctive values: found in a snapshot only if the value (not the name) was stored.
SETTINGS = {
    "TG_FLEET": "plant-at-load-7q3",
    "TG_CHANNEL": "beta-at-load-7q3",
    "TG_MQTT_PORT": "28831",
    "TG_SEED": "41",
    "TG_RELEASE_KEY_NAME": "signer-at-load-7q3",
}
SECRETS = {
    "DATABASE_URL": "postgresql://tg:dbpass-9Zr4kQ@db:5432/tg",
    "TG_MQTT_PASSWORD": "mqttpass-9Zr4kQ",
    "TG_KEY_MASTER_SITES": "master-sites-9Zr4kQ-000000000000000000000",
    "TG_KEY_MASTER_CUSTODIAN": "master-custodian-9Zr4kQ-0000000000000000",
    "TG_KEY_MASTER_RELEASE": "master-release-9Zr4kQ-000000000000000000",
}


@pytest.fixture
def deployment_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A code server's environment: settings, key and site paths, and secrets."""
    root = tmp_path / "state" / "artifacts"
    paths = {
        "TG_ARTIFACT_ROOT": str(root),
        "TG_KEY_DIR_SITES": str(tmp_path / "keys-sites"),
        "TG_SITES_FILE": str(tmp_path / "sites.yaml"),
        "TG_FLEET_RECIPIENTS_DIR": str(tmp_path / "recipients"),
        "TG_IDENTITY_CA_DIR": str(tmp_path / "ca"),
    }
    for name, value in {**SETTINGS, **paths, **SECRETS}.items():
        monkeypatch.setenv(name, value)
    return root


def env_var_name(value: object) -> str | None:
    """The variable a field refers to, or None for a literal (``EnvVar`` or ``EnvVar.int``)."""
    name = getattr(value, "env_var_name", None)
    return name if isinstance(name, str) else None


@pytest.mark.parametrize("definitions", ["location", "federation", "all_in_one"])
def test_deployment_resources_refer_to_set_variables_by_name(
    deployment_env: Path, definitions: str
) -> None:
    loaded = {
        "location": COORDINATOR.definitions,
        "federation": lambda: Federation().locations[COORDINATOR.name],
        "all_in_one": all_in_one_definitions,
    }[definitions]()
    resources = loaded.resources
    assert resources is not None
    fleet, artifacts = resources["fleet"], resources["artifacts"]
    assert isinstance(fleet, FleetResource)
    assert isinstance(artifacts, ArtifactStore)
    assert env_var_name(fleet.fleet) == "TG_FLEET"
    assert env_var_name(fleet.channel) == "TG_CHANNEL"
    assert env_var_name(fleet.release_key_name) == "TG_RELEASE_KEY_NAME"
    assert env_var_name(fleet.mqtt_port) == "TG_MQTT_PORT"
    assert env_var_name(fleet.runtime.seed) == "TG_SEED"
    assert env_var_name(artifacts.base_uri) == "TG_ARTIFACT_ROOT"
    assert env_var_name(resources["sites"].sites_file) == "TG_SITES_FILE"
    assert env_var_name(resources["site_keys"].key_dir) == "TG_KEY_DIR_SITES"
    # derived from TG_ARTIFACT_ROOT when the definitions load: literals
    state = deployment_env.parent
    assert fleet.registry_root == str(state / "registry")
    assert env_var_name(fleet.registry_root) is None
    assert resources["release_keys"].key_dir == str(state / "keys" / "release")
    # the float has no EnvVar in Dagster: the value at load
    assert resources["fleet_identity"].expiry_warning_days == 7.0


def test_the_ui_snapshot_shows_names_not_values_or_secrets(deployment_env: Path) -> None:
    del deployment_env
    for location in (COORDINATOR, AGGREGATOR, CUSTODIAN):
        snapshot = RepositorySnap.from_def(location.definitions().get_repository_def())
        serialized = serialize_value(snapshot)
        for value in (*SETTINGS.values(), *SECRETS.values(), "dbpass-9Zr4kQ"):
            if not value.isdigit():
                assert value not in serialized, (location.name, value)
        referenced = {
            config.name
            for resource in snapshot.resources or ()
            for config in resource.configured_values.values()
            if isinstance(config, ResourceConfigEnvVarSnap)
        }
        assert "TG_ARTIFACT_ROOT" in referenced, location.name
        assert not referenced & set(SECRETS), location.name
    coordinator = RepositorySnap.from_def(COORDINATOR.definitions().get_repository_def())
    (fleet,) = (resource for resource in coordinator.resources or () if resource.name == "fleet")
    assert fleet.configured_values["fleet"] == ResourceConfigEnvVarSnap(name="TG_FLEET")
    assert fleet.configured_values["mqtt_port"] == ResourceConfigEnvVarSnap(name="TG_MQTT_PORT")


def test_unset_variables_keep_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TG_ARTIFACT_ROOT", str(tmp_path / "artifacts"))
    resources = build_resources()
    fleet = resources["fleet"]
    assert (fleet.fleet, fleet.channel, fleet.mqtt_host) == ("demo", "stable", "")
    assert (fleet.mqtt_port, fleet.runtime.seed) == (1883, 0)
    assert fleet.release_key_name == "release-signing"
    assert resources["sites"].sites_file == ""
    assert resources["site_keys"].key_dir == str(tmp_path / "keys" / "sites")
    for value in (fleet.fleet, fleet.mqtt_port, fleet.mqtt_host, resources["sites"].sites_file):
        assert env_var_name(value) is None
    assert type(fleet.mqtt_port) is int


def test_an_explicit_environment_gives_literal_values(deployment_env: Path) -> None:
    mapping = {**SETTINGS, "TG_ARTIFACT_ROOT": str(deployment_env), "TG_KEY_DIR_SITES": "/k/s"}
    for resources in (build_resources(mapping), COORDINATOR.resources(mapping)):
        fleet = resources["fleet"]
        assert (fleet.fleet, fleet.channel) == (SETTINGS["TG_FLEET"], SETTINGS["TG_CHANNEL"])
        assert (fleet.mqtt_port, fleet.runtime.seed) == (28831, 41)
        assert resources["artifacts"].base_uri == str(deployment_env)
        assert resources["site_keys"].key_dir == "/k/s"
        assert not isinstance(fleet.fleet, EnvVar)
        assert env_var_name(fleet.mqtt_port) is None


@asset
def configured_fleet(fleet: FleetResource, artifacts: ArtifactStore) -> str:
    """What a run's step sees of the fleet and artifact settings."""
    kinds = {type(fleet.fleet).__name__, type(fleet.mqtt_port).__name__}
    return (
        f"{fleet.fleet} {fleet.channel} {fleet.mqtt_port} {fleet.runtime.seed} "
        f"{artifacts.root} {sorted(kinds)}"
    )


def test_a_run_resolves_the_references_from_its_own_environment(
    deployment_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = COORDINATOR.resources()
    # the run worker's environment differs from the one the definitions loaded in
    # (and uses the development database: no DATABASE_URL)
    monkeypatch.delenv("DATABASE_URL")
    deployment_env.parent.mkdir(parents=True)  # its SQLite file: derived at load
    run_root = tmp_path / "run-artifacts"
    monkeypatch.setenv("TG_FLEET", "plant-at-run")
    monkeypatch.setenv("TG_MQTT_PORT", "2884")
    monkeypatch.setenv("TG_ARTIFACT_ROOT", str(run_root))
    result = materialize(
        [configured_fleet],
        resources={"fleet": resources["fleet"], "artifacts": resources["artifacts"]},
    )
    assert result.success
    assert run_root != deployment_env
    assert result.output_for_node("configured_fleet") == (
        f"plant-at-run {SETTINGS['TG_CHANNEL']} 2884 41 {run_root} ['int', 'str']"
    )


def test_a_reference_read_outside_a_run_is_refused(deployment_env: Path) -> None:
    deployed = build_resources()
    with pytest.raises(RuntimeError, match=r"SiteRegistry.sites_file is EnvVar\('TG_SITES_FILE'\)"):
        deployed["sites"].sites()
    with pytest.raises(RuntimeError, match=r"build_resources\(os.environ\)"):
        _ = deployed["artifacts"].root
    with pytest.raises(RuntimeError, match=r"FleetResource.recipients_dir is EnvVar"):
        deployed["fleet"].recipient_keys()
    with pytest.raises(RuntimeError, match=r"FleetIdentity.ca_dir is EnvVar"):
        deployed["fleet_identity"].inventory(datetime.now(UTC))
    # what make demo does instead: literal values from the same environment
    assert build_resources(os.environ)["artifacts"].root == deployment_env


def test_a_sensor_tick_resolves_the_references_like_a_code_server(
    deployment_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    del deployment_env
    repository = COORDINATOR.definitions().get_repository_def()
    sensor = repository.get_sensor_def("site_registry_sensor")
    # set after the definitions loaded: the tick builds the sensor's resources from the
    # location's top-level ones, as the code server does, and resolves them then
    missing = tmp_path / "sites-at-tick.yaml"
    monkeypatch.setenv("TG_SITES_FILE", str(missing))
    with instance_for_test() as instance:
        context = build_sensor_context(
            instance=instance,
            repository_def=repository,
            resources={"sites": repository.get_top_level_resources()["sites"]},
        )
        tick = sensor.evaluate_tick(context)
    assert tick.skip_message is not None
    assert f"site registry {missing} does not exist" in tick.skip_message
