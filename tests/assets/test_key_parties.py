"""Separate parties, separate secrets: each party's vault has its own directory and
master, and the aggregator is given no vault and nothing that opens one."""

from __future__ import annotations

import importlib
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster import (
    AssetsDefinition,
    ConfigurableResource,
    DagsterInstance,
    Definitions,
    build_init_resource_context,
    materialize,
)

from tensorguard.keys._errors import KeyNotFoundError, WrongMasterKeyError
from tensorguard.keys._file_provider import FileKeyProvider
from tensorguard.keys._names import KeyPurpose
from tensorguard_assets.federation import CUSTODIAN_KEY_NAME, federation_keys
from tensorguard_assets.locations import AGGREGATOR, COORDINATOR, CUSTODIAN, LOCATIONS
from tensorguard_assets.resources import build_resources
from tensorguard_assets.site_keys import site_key_name
from tensorguard_resources.federation import CKKSSecretStore
from tensorguard_resources.keys import KeyVault

# production masters must be hex/base64 of 32 random bytes (tensorguard.keys._master)
SHARED_MASTER, SITES_MASTER, CUSTODIAN_MASTER = (secrets.token_hex(32) for _ in range(3))

REPO_ROOT = Path(__file__).resolve().parents[2]

VAULT_OF_ASSET = {
    "federation_keys": {"custodian_keys"},
    "round_spec": {"release_keys"},  # the coordinator signs the round spec
    "site_update": {"site_keys"},
    "seed_reveals": {"site_keys"},
    "aggregated_update": set(),
    "global_adapter": {"custodian_keys"},
    "tgsp_package": {"release_keys"},
    "release": {"release_keys"},
    "canary_rollout": {"release_keys"},  # signs rollback orders and the rollout log
}
"""Which party's vault each key-using asset may take; every other asset takes none."""

FAST_CEREMONY = {
    "ops": {
        "federation_keys": {
            "config": {"poly_modulus_degree": 4096, "coeff_mod_bit_sizes": [40, 20, 40]}
        }
    }
}


def _vault_keys(resources: dict[str, Any]) -> set[str]:
    return {name for name, value in resources.items() if isinstance(value, KeyVault)}


def _asset(name: str) -> AssetsDefinition:
    [found] = [
        a
        for location in LOCATIONS
        for a in location.assets
        if isinstance(a, AssetsDefinition) and name in {k.path[-1] for k in a.keys}
    ]
    return found


def _open(vault: KeyVault) -> KeyVault:
    vault.setup_for_execution(build_init_resource_context())
    return vault


def _string_leaves(value: Any) -> list[str]:
    if isinstance(value, ConfigurableResource):
        return _string_leaves({name: getattr(value, name) for name in type(value).model_fields})
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _string_leaves(item)]
    if isinstance(value, list | tuple):
        return [leaf for item in value for leaf in _string_leaves(item)]
    return [value] if isinstance(value, str) else []


def test_three_parties_three_directories_three_masters(tmp_path: Path) -> None:
    resources = build_resources({"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    vaults = [resources[name] for name in ("site_keys", "custodian_keys", "release_keys")]
    assert [v.party for v in vaults] == ["sites", "custodian", "release"]
    assert len({v.key_dir for v in vaults}) == 3
    assert len({v.dev_master_file for v in vaults}) == 3
    masters = set()
    for vault in vaults:
        _open(vault)
        masters.add(Path(vault.dev_master_file).read_text())
    assert len(masters) == 3


def test_each_key_using_asset_takes_only_its_partys_vault(tmp_path: Path) -> None:
    resources = build_resources({"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    vault_keys = _vault_keys(resources)
    assert vault_keys == {"site_keys", "custodian_keys", "release_keys"}
    for asset in (asset for location in LOCATIONS for asset in location.assets):
        for key in asset.keys:
            expected = VAULT_OF_ASSET.get(key.path[-1], set())
            assert asset.required_resource_keys & vault_keys == expected, key


def test_the_aggregator_is_given_nothing_that_opens_a_vault(tmp_path: Path) -> None:
    """The aggregator's resources hold no vault, no master and no key directory."""
    resources = build_resources({"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    declared = _asset("aggregated_update").required_resource_keys - {"io_manager"}
    aggregator = {name: resources[name] for name in declared}
    # verified_artifacts loads its inputs (round spec, public federation context)
    assert set(aggregator) == {"artifacts", "sites", "verified_artifacts"}
    assert not _vault_keys(aggregator)
    given = _string_leaves(aggregator)
    for vault in (resources[name] for name in _vault_keys(resources)):
        _open(vault)
        secrets = (vault.key_dir, vault.dev_master_file, Path(vault.dev_master_file).read_text())
        assert not [leaf for leaf in given for secret in secrets if secret.strip() in leaf]


def test_the_ceremony_seals_the_ckks_secret_for_the_custodian_only(
    tmp_path: Path, sqlite_instance: DagsterInstance
) -> None:
    resources = build_resources({"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    result = materialize(
        [federation_keys],
        instance=sqlite_instance,
        resources=resources,
        run_config=FAST_CEREMONY,
    )
    [materialization] = result.asset_materializations_for_node("federation_keys")
    secret_name = str(materialization.metadata["secret_name"].value)

    custodian = _open(resources["custodian_keys"])
    assert CKKSSecretStore(custodian.provider).load_secret(secret_name)
    custodian.provider.signer_for(CUSTODIAN_KEY_NAME, generate_if_missing=True)

    sites = _open(resources["site_keys"])
    with pytest.raises(KeyNotFoundError):
        CKKSSecretStore(sites.provider).load_secret(secret_name)
    sites.provider.signer_for(site_key_name("lab-east"), generate_if_missing=True)
    assert not custodian.provider.has_key(site_key_name("lab-east"), KeyPurpose.SIGNING)
    assert not sites.provider.has_key(CUSTODIAN_KEY_NAME, KeyPurpose.SIGNING)
    release = _open(resources["release_keys"])
    with pytest.raises(KeyNotFoundError):
        CKKSSecretStore(release.provider).load_secret(secret_name)

    site_master = Path(sites.dev_master_file).read_text().strip()
    with pytest.raises(WrongMasterKeyError):
        FileKeyProvider.from_env(
            Path(custodian.key_dir), {"TG_KEY_MASTER": site_master}
        ).load_secret(secret_name, KeyPurpose.CKKS_SECRET)


def test_production_vault_names_its_own_missing_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    monkeypatch.setenv("TG_KEY_MASTER", SHARED_MASTER)  # a shared master opens no party's vault
    monkeypatch.setenv("TG_KEY_MASTER_SITES", SITES_MASTER)
    resources = build_resources({"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")})
    _open(resources["site_keys"])
    with pytest.raises(Exception, match="TG_KEY_MASTER_CUSTODIAN is not set") as excinfo:
        _open(resources["custodian_keys"])
    assert SHARED_MASTER not in str(excinfo.value)
    assert not Path(resources["custodian_keys"].dev_master_file).exists()


VAULTS_OF_LOCATION = {
    COORDINATOR.name: {"site_keys", "release_keys"},
    AGGREGATOR.name: set(),
    CUSTODIAN.name: {"custodian_keys"},
}


def test_each_code_location_is_given_only_its_own_partys_vaults() -> None:
    for location in LOCATIONS:
        definitions = location.definitions({})
        Definitions.validate_loadable(definitions)
        assert _vault_keys(location.resources({})) == VAULTS_OF_LOCATION[location.name]
    # Every asset is run by exactly one location.
    names = [key.path[-1] for location in LOCATIONS for a in location.assets for key in a.keys]
    assert len(names) == len(set(names))


def test_workspace_loads_one_code_location_per_party() -> None:
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text(encoding="utf-8"))
    loaded = {
        entry["python_module"]["location_name"]: entry["python_module"]["module_name"]
        for entry in workspace["load_from"]
    }
    assert set(loaded) == {location.name for location in LOCATIONS}
    for location in LOCATIONS:
        module = importlib.import_module(loaded[location.name])
        served = {key.path[-1] for key in module.defs.resolve_all_asset_keys()}
        own = {key.path[-1] for asset in location.assets for key in asset.keys}
        # A location lists other parties' assets only as upstream stubs it cannot run.
        assert own <= served
        runnable = {
            key.path[-1] for key in module.defs.resolve_asset_graph().materializable_asset_keys
        }
        assert runnable == own, location.name
        assert _vault_keys(module.defs.resources) == VAULTS_OF_LOCATION[location.name]


def test_production_locations_need_only_their_own_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The aggregator's process starts with no master at all, the custodian's with its
    own only; neither can open a vault it was not given."""
    monkeypatch.setenv("TG_ENVIRONMENT", "production")
    env = {"TG_ARTIFACT_ROOT": str(tmp_path / "artifacts")}
    for name in ("TG_KEY_MASTER", "TG_KEY_MASTER_SITES", "TG_KEY_MASTER_RELEASE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TG_KEY_MASTER_CUSTODIAN", CUSTODIAN_MASTER)
    assert not _vault_keys(AGGREGATOR.resources(env))
    [custodian_vault] = [
        value for value in CUSTODIAN.resources(env).values() if isinstance(value, KeyVault)
    ]
    _open(custodian_vault)
    assert custodian_vault.party == "custodian"


def test_the_aggregators_own_definitions_load_without_any_vault() -> None:
    aggregator_defs = AGGREGATOR.definitions({})
    Definitions.validate_loadable(aggregator_defs)
    assert not _vault_keys(AGGREGATOR.resources({}))
    assert {key.to_user_string() for key in aggregator_defs.resolve_all_asset_keys()} >= {
        "aggregated_update"
    }
    assert aggregator_defs.resolve_job_def("aggregation_job") is not None
