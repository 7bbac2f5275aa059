"""The fleet identity assets in Dagster: the inventory (metadata per endpoint), its expiry
check, and the renewal asset against a real Pebble and a Mosquitto TLS listener."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterInstance, materialize

from tensorguard.identity import CertificateAuthority
from tensorguard.identity.deploy import CertificateFiles
from tensorguard.identity.renewal import new_key_and_csr
from tensorguard_assets.identity import (
    EXPIRY_CHECK,
    certificate_inventory,
    certificate_renewals,
)
from tensorguard_resources.identity import FleetIdentity
from tests.identity.test_renewal import NAME, acme_issuer, mosquitto_tls
from tests.services.pebble import PebbleServer


def endpoint_files(pebble: PebbleServer, tmp_path: Path) -> CertificateFiles:
    """A service certificate from Pebble, installed where the endpoint reads it."""
    files = CertificateFiles(tmp_path / "broker.crt", tmp_path / "broker.key")
    key_pem, csr_pem = new_key_and_csr((NAME,))
    files.install(acme_issuer(pebble, tmp_path).issue(csr_pem), key_pem)
    return files


def renewal_config(
    pebble: PebbleServer, tmp_path: Path, files: CertificateFiles, port: int, pid_file: Path
) -> Path:
    """A renewal configuration for one endpoint, due at once (Pebble issues long-lived
    certificates, so the window is wider than their life)."""
    path = tmp_path / "renewal.json"
    config = {
        "acme": {
            "directory_url": pebble.directory_url,
            "account_key_file": str(tmp_path / "acme-account.key"),
            "ca_bundle": str(pebble.api_ca_file),
            "http01_host": "127.0.0.1",
            "http01_port": pebble.http01_port,
            "timeout_s": 30,
        },
        "renew_within_days": 100000,
        "endpoints": [
            {
                "endpoint_id": "mqtt-broker",
                "names": [NAME],
                "cert_file": str(files.cert_file),
                "key_file": str(files.key_file),
                "host": "127.0.0.1",
                "port": port,
                "reload": {"signal_pid_file": str(pid_file)},
            }
        ],
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def run(asset: Any, identity: FleetIdentity) -> Any:
    with DagsterInstance.ephemeral() as instance:
        return materialize(
            [asset], resources={"fleet_identity": identity}, instance=instance, raise_on_error=False
        )


def inventory_metadata(result: Any) -> dict[str, Any]:
    [event] = result.asset_materializations_for_node("certificate_inventory")
    return {key: value.value for key, value in event.metadata.items()}


def expiry_check(result: Any) -> Any:
    [evaluation] = [
        e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert evaluation.asset_key == AssetKey("certificate_inventory")
    assert evaluation.check_name == EXPIRY_CHECK
    return evaluation


def test_inventory_lists_nodes_and_acme_endpoints_and_checks_expiry(
    fleet_ca: CertificateAuthority, pebble_server: PebbleServer, tmp_path: Path
) -> None:
    files = endpoint_files(pebble_server, tmp_path)
    config = renewal_config(pebble_server, tmp_path, files, 1, tmp_path / "none.pid")
    identity = FleetIdentity(ca_dir=str(fleet_ca.store.path), renewal_config=str(config))

    result = run(certificate_inventory, identity)
    assert result.success
    metadata = inventory_metadata(result)
    assert metadata["endpoints"] == 2
    node = metadata["node/robot-7"]
    [record] = [r for r in fleet_ca.records() if r.common_name == "robot-7"]
    assert node["serial"] == record.serial
    assert node["issuer"] == fleet_ca.intermediate.subject.rfc4514_string()
    assert 29 < node["days_left"] <= 30
    service = metadata["service/mqtt-broker"]
    assert "Pebble" in service["issuer"]
    assert metadata["min_days_left"] == node["days_left"]
    assert expiry_check(result).passed  # default window: 7 days

    # 31 days before: the node certificate (30 days left) fails the check.
    warned = FleetIdentity(
        ca_dir=str(fleet_ca.store.path), renewal_config=str(config), expiry_warning_days=31
    )
    check = expiry_check(run(certificate_inventory, warned))
    assert not check.passed
    assert "robot-7" in check.description
    assert "mqtt-broker" not in check.description


def test_inventory_without_a_ca_fails_closed(tmp_path: Path) -> None:
    result = run(certificate_inventory, FleetIdentity(ca_dir=str(tmp_path / "absent")))
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "identity init" in str(failure.event_specific_data.error)


def test_renewal_asset_renews_deploys_and_records(
    fleet_ca: CertificateAuthority, pebble_server: PebbleServer, tmp_path: Path
) -> None:
    files = endpoint_files(pebble_server, tmp_path)
    before = files.snapshot()
    with mosquitto_tls(files, tmp_path) as (port, pid_file):
        config = renewal_config(pebble_server, tmp_path, files, port, pid_file)
        identity = FleetIdentity(ca_dir=str(fleet_ca.store.path), renewal_config=str(config))
        result = run(certificate_renewals, identity)
    assert result.success
    [event] = result.asset_materializations_for_node("certificate_renewals")
    assert event.metadata["renewed"].value == 1
    assert files.snapshot() != before
    transitions = [
        entry["details"]["to"]
        for entry in fleet_ca.audit.entries()
        if entry["event"] == "renewal-transition" and entry["endpoint_id"] == "mqtt-broker"
    ]
    assert transitions[-1] == "SUCCEEDED"
    assert len(transitions) == 7


def test_renewal_asset_fails_the_run_when_a_renewal_rolls_back(
    fleet_ca: CertificateAuthority, pebble_server: PebbleServer, tmp_path: Path
) -> None:
    files = endpoint_files(pebble_server, tmp_path)
    before = files.snapshot()
    with mosquitto_tls(files, tmp_path) as (port, _pid_file):
        config = renewal_config(pebble_server, tmp_path, files, port, tmp_path / "wrong.pid")
        identity = FleetIdentity(ca_dir=str(fleet_ca.store.path), renewal_config=str(config))
        result = run(certificate_renewals, identity)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "ROLLED_BACK" in str(failure.event_specific_data.error)
    assert files.snapshot() == before
