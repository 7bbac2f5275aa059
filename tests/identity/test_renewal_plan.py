"""The renewal configuration: strict parsing, due endpoints, DNS-01 refusal."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tensorguard.cli.exit_codes import ExitCode, exit_code_for
from tensorguard.identity.acme_issuer import AcmeIssuanceError
from tensorguard.identity.errors import IdentityConfigError
from tensorguard.identity.renewal_plan import is_due, load_renewal_config


def config_dict(tmp_path: Path, **acme: Any) -> dict[str, Any]:
    return {
        "acme": {
            "directory_url": "https://acme.test/dir",
            "account_key_file": str(tmp_path / "account.key"),
            **acme,
        },
        "renew_within_days": 10,
        "endpoints": [
            {
                "endpoint_id": "mqtt-broker",
                "names": ["broker.fleet.test"],
                "cert_file": str(tmp_path / "broker.crt"),
                "key_file": str(tmp_path / "broker.key"),
                "host": "127.0.0.1",
                "port": 8883,
                "reload": {"command": ["systemctl", "reload", "mosquitto"]},
            }
        ],
    }


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "renewal.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def certificate(days: float) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "broker.fleet.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_an_endpoint_is_due_when_missing_unreadable_or_inside_the_window(tmp_path: Path) -> None:
    config = load_renewal_config(write(tmp_path, config_dict(tmp_path)))
    [endpoint] = config.endpoints
    now = datetime.now(UTC)
    assert is_due(endpoint, now, 10)  # no certificate yet
    endpoint.cert_file.write_bytes(b"not a certificate")
    assert is_due(endpoint, now, 10)
    endpoint.cert_file.write_bytes(certificate(days=30))
    assert not is_due(endpoint, now, 10)
    endpoint.cert_file.write_bytes(certificate(days=9))
    assert is_due(endpoint, now, 10)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["acme"].update(directory_url="http://acme.test/dir"), "directory_url"),
        (lambda c: c["endpoints"][0].update(reload={}), "exactly one"),
        (lambda c: c["endpoints"].append(dict(c["endpoints"][0])), "unique"),
        (lambda c: c["endpoints"][0].update(unknown=1), "unknown"),
        (lambda c: c.update(renew_within_days=0), "renew_within_days"),
        (lambda c: c["acme"].update(account_key_name="acme"), "exactly one of account_key"),
        (lambda c: c["acme"].pop("account_key_file"), "exactly one of account_key"),
    ],
)
def test_invalid_configurations_are_refused(tmp_path: Path, edit: Any, message: str) -> None:
    data = config_dict(tmp_path)
    edit(data)
    with pytest.raises(IdentityConfigError, match=message):
        load_renewal_config(write(tmp_path, data))


def test_dns01_without_a_hook_is_refused_before_any_request(tmp_path: Path) -> None:
    config = load_renewal_config(write(tmp_path, config_dict(tmp_path, challenge="dns-01")))
    with pytest.raises(AcmeIssuanceError, match="no DNS provider is configured") as refused:
        config.issuer()
    assert exit_code_for(refused.value) == ExitCode.CONFIG
    hooked = config_dict(tmp_path, challenge="dns-01", dns_hook=["/usr/local/bin/zone-edit"])
    assert load_renewal_config(write(tmp_path, hooked)).issuer().dns_provider is not None


def test_without_the_acme_extra_the_error_says_what_to_install() -> None:
    probe = (
        "import sys\n"
        "sys.modules['acme'] = None  # as on a base install\n"
        "from tensorguard.cli.exit_codes import exit_code_for\n"
        "try:\n"
        "    import tensorguard.identity.renewal_plan\n"
        "except Exception as exc:\n"
        "    print(int(exit_code_for(exc)), exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{int(ExitCode.CONFIG)} ACME needs the acme extra")
    assert "pip install 'tensorguard[acme]'" in done.stdout
