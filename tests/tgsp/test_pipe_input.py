"""Packages read from a pipe: ``tgsp inspect|verify|open -`` and FIFO paths spool to a
private temporary file and run the same checks; the library refuses a non-seekable
package with a clear error instead of misreading it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tensorguard.cli import ExitCode, main
from tensorguard.crypto import XWingPrivateKey
from tensorguard.tgsp import PackageUnreadableError, TrustStore, verify_package
from tensorguard.tgsp._keyfiles import write_key_file
from tests.tgsp.conftest import Packager


@pytest.fixture
def files(
    tmp_path: Path, packager: Packager, recipients: list[XWingPrivateKey], trust_store: TrustStore
) -> dict[str, Path]:
    package = packager.build({"a.bin": b"A" * 5000, "dir/b.txt": b"b"}).path
    key, trust = tmp_path / "node.key", tmp_path / "trust.json"
    write_key_file(key, recipients[0])
    trust_store.save(trust)
    spool_dir = tmp_path / "tmp"
    spool_dir.mkdir()
    return {"package": package, "key": key, "trust": trust, "tmp": spool_dir}


def _cli(stdin: bytes, tmpdir: Path, *arguments: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TG_")}
    env["TMPDIR"] = str(tmpdir)
    return subprocess.run(
        [sys.executable, "-m", "tensorguard", "tgsp", *arguments],
        input=stdin,
        capture_output=True,
        env=env,
        check=False,
        timeout=120,
    )


def test_verify_and_open_from_standard_input(tmp_path: Path, files: dict[str, Path]) -> None:
    data = files["package"].read_bytes()
    trust = ["--trust-store", str(files["trust"])]
    verified = _cli(data, files["tmp"], "verify", "-", *trust)
    assert verified.returncode == ExitCode.OK, verified.stderr
    assert b"VERIFIED" in verified.stdout
    out = tmp_path / "out"
    opened = _cli(data, files["tmp"], "open", "-", "-d", str(out), "--recipient-key",
                  str(files["key"]), *trust)  # fmt: skip
    assert opened.returncode == ExitCode.OK, opened.stderr
    assert (out / "a.bin").read_bytes() == b"A" * 5000
    inspected = _cli(data, files["tmp"], "inspect", "-")
    assert inspected.returncode == ExitCode.OK
    tampered = bytearray(data)
    tampered[-10] ^= 1
    refused = _cli(bytes(tampered), files["tmp"], "verify", "-", *trust)
    assert refused.returncode == ExitCode.INTEGRITY, refused.stderr
    assert list(files["tmp"].iterdir()) == [], "the spooled copies are removed"


def _feed_fifo(fifo: Path, data: bytes) -> threading.Thread:
    def write() -> None:
        try:
            with fifo.open("wb") as sink:
                sink.write(data)
        except BrokenPipeError:
            pass  # the reader refused the pipe and closed it

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    return writer


def test_cli_reads_a_fifo_path(tmp_path: Path, files: dict[str, Path]) -> None:
    fifo = tmp_path / "package.fifo"
    os.mkfifo(fifo)
    writer = _feed_fifo(fifo, files["package"].read_bytes())
    code = main(["tgsp", "verify", str(fifo), "--trust-store", str(files["trust"])])
    writer.join(timeout=30)
    assert code == ExitCode.OK


def test_library_refuses_a_pipe_clearly(
    tmp_path: Path, files: dict[str, Path], trust_store: TrustStore
) -> None:
    fifo = tmp_path / "package.fifo"
    os.mkfifo(fifo)
    writer = _feed_fifo(fifo, files["package"].read_bytes())
    with pytest.raises(PackageUnreadableError, match="not a regular file"):
        verify_package(fifo, trust_store)
    writer.join(timeout=1)
