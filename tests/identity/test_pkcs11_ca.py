"""The CA with its keys in a real SoftHSM2 token (PKCS#11), through the command line.

SoftHSM2 reads its configuration once per process, and the key-provider tests may have
loaded it already with their own tokens, so the CA runs in child processes
(``python -m tensorguard``) that see only this test's token store.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.identity.conftest import TRUST_DOMAIN, node_csr
from tests.services.softhsm import running_softhsm

pytest.importorskip("pkcs11")

UNSEAL_SCALARS = """
import json, os, sys
from cryptography.hazmat.primitives import serialization
from tensorguard.keys import KeyPurpose, key_provider_from_env
with key_provider_from_env(os.environ, allow_ephemeral=False) as provider:
    scalars = {}
    for name in ("fleet-ca-root", "fleet-ca-intermediate"):
        der = provider.load_secret(name, KeyPurpose.GENERIC)
        key = serialization.load_der_private_key(der, password=None)
        scalars[name] = key.private_numbers().private_value.to_bytes(32, "big").hex()
    print(json.dumps(scalars))
"""


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def test_a_ca_whose_keys_are_sealed_by_a_softhsm_token(tmp_path: Path) -> None:
    with running_softhsm(tmp_path / "softhsm", ["tg-identity-ca"]) as store:
        token = store.token("tg-identity-ca")
        env = {
            **os.environ,
            "SOFTHSM2_CONF": str(store.conf_path),
            "TG_KEY_PROVIDER": "pkcs11",
            "TG_PKCS11_MODULE": token.module_path,
            "TG_PKCS11_TOKEN_LABEL": token.label,
            "TG_PKCS11_PIN": token.user_pin,
            "TG_KEY_DIR": str(tmp_path / "ca-keys"),
        }
        env.pop("TG_ENVIRONMENT", None)
        ca_dir = tmp_path / "ca"
        cli = ("-m", "tensorguard")
        created = _run(
            env, *cli, "identity", "init", "--ca-dir", str(ca_dir), "--trust-domain", TRUST_DOMAIN
        )
        assert created.returncode == 0, created.stderr
        assert json.loads(created.stdout)["key_provider"] == "pkcs11"
        csr = tmp_path / "robot-1.csr.pem"
        csr.write_bytes(node_csr("robot-1"))
        chain = tmp_path / "robot-1.crt"
        issued = _run(
            env,
            *cli,
            "identity",
            "issue",
            "--ca-dir",
            str(ca_dir),
            "--csr",
            str(csr),
            "--out",
            str(chain),
        )
        assert issued.returncode == 0, issued.stderr
        verified = subprocess.run(
            [
                "openssl",
                "verify",
                "-CAfile",
                str(ca_dir / "root.pem"),
                "-untrusted",
                str(ca_dir / "intermediate.pem"),
                str(chain),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        audit = _run(
            env,
            *cli,
            "audit",
            "verify",
            "--log",
            str(ca_dir / "audit.jsonl"),
            "--public-key",
            str(ca_dir / "audit-key.pub"),
        )
        assert audit.returncode == 0, audit.stderr
        assert json.loads(audit.stdout)["events"] == {"ca-created": 1, "issued": 1}

        scalars = _run(env, "-c", UNSEAL_SCALARS)
        assert scalars.returncode == 0, scalars.stderr
        secrets = [bytes.fromhex(value) for value in json.loads(scalars.stdout).values()]
        forms = [f for s in secrets for f in (s, s.hex().encode(), base64.b64encode(s))]
        stored = [
            p
            for root in (tmp_path / "ca-keys", store.token_dir, ca_dir)
            for p in root.rglob("*")
            if p.is_file()
        ]
        assert any(store.token_dir in p.parents for p in stored)
        for path in stored:
            data = path.read_bytes()
            assert not any(form in data for form in forms), (
                f"a CA private key in the clear in {path}"
            )

        env["TG_PKCS11_PIN"] = "0" * 16
        refused = _run(
            env,
            *cli,
            "identity",
            "issue",
            "--ca-dir",
            str(ca_dir),
            "--csr",
            str(csr),
            "--out",
            str(tmp_path / "x.crt"),
        )
        assert refused.returncode == 3, refused.stderr  # CONFIG: set the right PIN
        assert "rejected the user PIN" in refused.stderr
        assert not (tmp_path / "x.crt").exists()
