"""``tensorguard tgsp build`` and ``open`` on a full disk: a clear error, nothing left.

Two ways to run out of space, each with the real CLI in a child process:

* ``tmpfs``: a 256 KiB tmpfs mounted for the test (needs root or CAP_SYS_ADMIN; skipped
  with the reason where mounting is not allowed), so writes fail with ENOSPC;
* ``fsize``: ``RLIMIT_FSIZE`` set in the child (works unprivileged), so writes past the
  limit fail with EFBIG.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode
from tensorguard.crypto import CompositeSigningKey, XWingPrivateKey
from tensorguard.tgsp import TrustStore
from tensorguard.tgsp._keyfiles import write_key_file
from tests.tgsp.conftest import make_tree

SMALL_FS_BYTES = 256 * 1024
PAYLOAD_BYTES = 1024 * 1024


@dataclass
class Limited:
    """Where the output goes and how the child is limited."""

    directory: Path
    file_size_limit: int | None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        limit = self.file_size_limit

        def limit_file_size() -> None:
            if limit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        return subprocess.run(
            [sys.executable, "-m", "tensorguard.cli", *args],
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=limit_file_size,
            check=False,
        )


def _mount_tmpfs(mount_point: Path) -> str | None:
    """Mount a small tmpfs; return why not when that is not allowed here."""
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={SMALL_FS_BYTES},mode=0700", "tmpfs", mount_point],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if done.returncode == 0 else (done.stderr.strip() or "mount failed")


@pytest.fixture(params=["tmpfs", "fsize"])
def limited(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Limited]:
    if request.param == "fsize":
        directory = tmp_path / "out"
        directory.mkdir()
        yield Limited(directory, SMALL_FS_BYTES)
        return
    mount_point = tmp_path / "small"
    problem = _mount_tmpfs(mount_point)
    if problem is not None:
        pytest.skip(f"cannot mount a tmpfs here ({problem}); the fsize case still runs")
    try:
        yield Limited(mount_point, None)
    finally:
        subprocess.run(["umount", mount_point], check=True)


@dataclass
class Keys:
    producer: Path
    recipient_public: Path
    recipient_private: Path
    trust: Path


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    producer, recipient = CompositeSigningKey.generate(), XWingPrivateKey.generate()
    found = Keys(
        tmp_path / "producer.key",
        tmp_path / "recipient.pub",
        tmp_path / "recipient.key",
        tmp_path / "trust.json",
    )
    write_key_file(found.producer, producer)
    write_key_file(found.recipient_public, recipient.public_key())
    write_key_file(found.recipient_private, recipient)
    TrustStore([producer.public_key()]).save(found.trust)
    return found


def _build_args(source: Path, output: Path, keys: Keys) -> list[str]:
    return [
        "tgsp", "build", str(source), "-o", str(output),
        "--signing-key", str(keys.producer), "--recipient", str(keys.recipient_public),
        "--channel", "stable", "--version", "1", "--model-name", "tiny-lora",
    ]  # fmt: skip


def _source(tmp_path: Path) -> Path:
    return make_tree(
        tmp_path / "adapter",
        {"adapter_config.json": b"{}", "adapter_model.safetensors": os.urandom(PAYLOAD_BYTES)},
    )


def _clear_refusal(done: subprocess.CompletedProcess[str], code: ExitCode, what: str) -> None:
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr
    assert what in done.stderr
    assert "free space" in done.stderr


def test_build_on_a_full_disk_fails_clearly_and_leaves_no_package(
    tmp_path: Path, keys: Keys, limited: Limited
) -> None:
    output = limited.directory / "release.tgsp"
    done = limited.run(*_build_args(_source(tmp_path), output, keys))
    _clear_refusal(done, ExitCode.INPUT, f"cannot write {output}")
    assert list(limited.directory.iterdir()) == [], "no package and no temporary file left"


def test_open_on_a_full_disk_fails_clearly_and_leaves_no_tree(
    tmp_path: Path, keys: Keys, limited: Limited
) -> None:
    package = tmp_path / "release.tgsp"
    built = Limited(tmp_path, None).run(*_build_args(_source(tmp_path), package, keys))
    assert built.returncode == ExitCode.OK, built.stderr
    destination = limited.directory / "installed"
    done = limited.run(
        "tgsp", "open", str(package), "-d", str(destination),
        "--recipient-key", str(keys.recipient_private), "--trust-store", str(keys.trust),
    )  # fmt: skip
    _clear_refusal(done, ExitCode.EXTRACTION, f"into {destination}")
    assert list(limited.directory.iterdir()) == [], "no extracted tree and no staging directory"
