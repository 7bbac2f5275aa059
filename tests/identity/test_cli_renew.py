"""``tensorguard identity renew``: the renewal state machine from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tensorguard.cli import main
from tensorguard.cli.exit_codes import ExitCode
from tensorguard.identity import CertificateAuthority
from tensorguard.identity.tls_probe import served_fingerprint
from tensorguard.keys import KeyPurpose
from tests.identity.test_identity_assets import endpoint_files, renewal_config
from tests.identity.test_renewal import NAME, mosquitto_tls
from tests.services.pebble import PebbleServer


def test_renew_succeeds_then_a_broken_reload_rolls_back(
    fleet_ca: CertificateAuthority,
    pebble_server: PebbleServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    files = endpoint_files(pebble_server, tmp_path)
    with mosquitto_tls(files, tmp_path) as (port, pid_file):
        config = renewal_config(pebble_server, tmp_path, files, port, pid_file)
        in_provider = json.loads(config.read_text())  # the account key sealed in the CA's
        del in_provider["acme"]["account_key_file"]  # key provider (TG_KEY_*), not a file
        in_provider["acme"]["account_key_name"] = "acme-account"
        config.write_text(json.dumps(in_provider))
        argv = ["identity", "renew", "--ca-dir", str(fleet_ca.store.path), "--config", str(config)]
        assert not fleet_ca.provider.has_key("acme-account", KeyPurpose.GENERIC)
        assert main(argv) == ExitCode.OK
        [renewal] = json.loads(capsys.readouterr().out)["renewals"]
        assert renewal["state"] == "SUCCEEDED"
        assert served_fingerprint("127.0.0.1", port, NAME) == renewal["sha256"]
        assert fleet_ca.provider.has_key("acme-account", KeyPurpose.GENERIC)  # made by renew

        broken = json.loads(config.read_text())
        broken["endpoints"][0]["reload"] = {"command": ["false"]}
        config.write_text(json.dumps(broken))
        assert main(argv) == ExitCode.ERROR
        captured = capsys.readouterr()
        [rolled] = json.loads(captured.out)["renewals"]
        assert rolled["state"] == "ROLLED_BACK"
        assert "reload command false exited 1" in captured.err
        assert served_fingerprint("127.0.0.1", port, NAME) == renewal["sha256"]
    assert (
        main(
            [
                "identity",
                "renew",
                "--ca-dir",
                str(fleet_ca.store.path),
                "--config",
                str(config),
                "--endpoint",
                "nope",
            ]
        )
        == ExitCode.CONFIG
    )
