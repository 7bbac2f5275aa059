"""The base install (no extras) is enough for an edge node: keys, TGSP and the agent.

A fresh virtualenv gets ``pip install -c constraints.txt <copy of this source tree>``,
with the base dependencies installed for real (from pip's cache where it can), and then
runs the ``tensorguard`` console script there on a package built with this checkout's
API. torch, transformers, Dagster, TenSEAL, NumPy and SQLAlchemy must be absent there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode, main
from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.tgsp import TrustStore
from tensorguard.tgsp._keyfiles import write_key_file

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
# What setuptools needs to build the distribution (pyproject's readme and packages).
SOURCE_ITEMS = ("pyproject.toml", "README.md", "tensorguard", "tensorguard_resources",
                "tensorguard_assets")  # fmt: skip
NOT_IN_BASE = ("torch", "transformers", "peft", "dagster", "tenseal", "numpy", "sqlalchemy")
INSTALL_TIMEOUT_S = 900


@dataclass(frozen=True)
class BaseInstall:
    """A virtualenv holding ``tensorguard`` without extras."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def run(self, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run a program from the virtualenv, isolated from this checkout and its venv."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
        return subprocess.run(
            [str(self.bin / argv[0]), *argv[1:]],
            capture_output=True,
            text=True,
            cwd=cwd,
            env=env,
            timeout=120,
            check=False,
        )


def _copy_source(destination: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    destination.mkdir()
    for item in SOURCE_ITEMS:
        source = REPO_ROOT / item
        if source.is_dir():
            shutil.copytree(source, destination / item, ignore=ignore)
        else:
            shutil.copy2(source, destination / item)


@pytest.fixture(scope="session")
def base_install(tmp_path_factory: pytest.TempPathFactory) -> BaseInstall:
    root = tmp_path_factory.mktemp("base-install")
    source = root / "src"
    _copy_source(source)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    # This venv's pip installs into the new one (--python): no pip bootstrap, shared cache.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    installed = subprocess.run(
        [
            sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"),
            "install", "-q", "--disable-pip-version-check",
            "-c", str(REPO_ROOT / "constraints.txt"), str(source),
        ],
        capture_output=True, text=True, cwd=root, env=env, timeout=INSTALL_TIMEOUT_S,
        check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-4000:]
    return BaseInstall(venv)


@dataclass(frozen=True)
class Release:
    package: Path
    trust_store: Path
    recipient_key: Path
    source: Path


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """A package built, signed and encrypted by this checkout (the producer side)."""
    root = tmp_path_factory.mktemp("base-install-release")
    producer = CompositeSigningKey.generate()
    recipient = XWingPrivateKey.generate()
    write_key_file(root / "producer.key", producer)
    write_key_file(root / "recipient.pub", recipient.public_key())
    write_key_file(root / "recipient.key", recipient)
    TrustStore([producer.public_key()]).save(root / "trust.json")
    source = root / "adapter"
    (source / "weights").mkdir(parents=True)
    (source / "adapter_config.json").write_bytes(b'{"r": 8}')
    (source / "weights" / "a.bin").write_bytes(os.urandom(70_000))
    package = root / "release.tgsp"
    built = main(
        [
            "tgsp", "build", str(source), "-o", str(package),
            "--signing-key", str(root / "producer.key"),
            "--recipient", str(root / "recipient.pub"),
            "--channel", "stable", "--version", "1", "--model-name", "tiny-lora",
        ]
    )  # fmt: skip
    assert built == ExitCode.OK
    return Release(package, root / "trust.json", root / "recipient.key", source)


def test_heavy_libraries_are_not_installed(base_install: BaseInstall, tmp_path: Path) -> None:
    probe = (
        "import importlib, sys, tensorguard\n"
        "print(tensorguard.__file__)\n"
        f"for name in {NOT_IN_BASE!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        continue\n"
        "    print('importable:', name)\n"
    )
    result = base_install.run("python", "-c", probe, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    installed_at, *importable = result.stdout.splitlines()
    assert Path(installed_at).is_relative_to(base_install.root), "not the venv's tensorguard"
    assert importable == []


def test_agent_help_and_config_error(base_install: BaseInstall, tmp_path: Path) -> None:
    helped = base_install.run("tensorguard", "agent", "--help", cwd=tmp_path)
    assert helped.returncode == ExitCode.OK, helped.stderr
    assert "run" in helped.stdout
    # The handler imports the whole agent stack (MQTT, pydantic, keys, TGSP) before it
    # reads the configuration, so this proves the base install can run the agent.
    missing = tmp_path / "absent.yaml"
    ran = base_install.run("tensorguard", "agent", "run", "--config", str(missing), "--once",
                           cwd=tmp_path)  # fmt: skip
    assert ran.returncode == ExitCode.CONFIG, ran.stderr
    assert "cannot read agent configuration" in ran.stderr


def test_verify_and_open_a_real_package(
    base_install: BaseInstall, release: Release, tmp_path: Path
) -> None:
    verified = base_install.run(
        "tensorguard", "tgsp", "verify", str(release.package),
        "--trust-store", str(release.trust_store), "--channel", "stable", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert verified.returncode == ExitCode.OK, verified.stderr
    assert '"status": "VERIFIED"' in verified.stdout

    destination = tmp_path / "installed"
    opened = base_install.run(
        "tensorguard", "tgsp", "open", str(release.package), "-d", str(destination),
        "--recipient-key", str(release.recipient_key),
        "--trust-store", str(release.trust_store),
        cwd=tmp_path,
    )  # fmt: skip
    assert opened.returncode == ExitCode.OK, opened.stderr
    for relative in ("adapter_config.json", "weights/a.bin"):
        assert (destination / relative).read_bytes() == (release.source / relative).read_bytes()

    tampered = tmp_path / "tampered.tgsp"
    data = bytearray(release.package.read_bytes())
    data[-1] ^= 1
    tampered.write_bytes(bytes(data))
    refused = base_install.run(
        "tensorguard", "tgsp", "verify", str(tampered), "--trust-store", str(release.trust_store),
        cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == ExitCode.INTEGRITY, refused.stderr
