"""Worker threads change nothing but speed: same bytes, same manifest, same refusals."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tensorguard.crypto import XWingPrivateKey
from tensorguard.crypto._stream_aead import TAG_SIZE, encrypt_stream
from tensorguard.errors import ConfigurationError
from tensorguard.tgsp import (
    ChunkAuthenticationError,
    PayloadDigestError,
    TrustStore,
    open_package,
    verify_package,
)
from tensorguard.tgsp._format import Limits
from tensorguard.tgsp._opener import recover_data_key
from tensorguard.tgsp._parallel import (
    IN_FLIGHT_BYTES,
    THREADS_ENV,
    Workers,
    Writeback,
    chunks_in_flight,
    resolve_threads,
)
from tensorguard.tgsp._payload import decrypt_payload, derive_payload_key
from tensorguard.tgsp._reader import inspect_package
from tensorguard.tgsp._sealing import seal_files
from tensorguard.tgsp._source import collect_source_files
from tests.tgsp.conftest import SMALL_CHUNK, Packager, make_tree

REPO_ROOT = Path(__file__).resolve().parents[2]
THREAD_COUNTS = (1, 2, 4, 7)
# Empty files at the start, middle and end; files that end exactly on, just before and
# just after a chunk boundary; one file spanning many chunks.
TREE = {
    "0-empty": b"",
    "a.bin": os.urandom(SMALL_CHUNK - 1),
    "b.bin": os.urandom(1),
    "c/empty": b"",
    "c/d.bin": os.urandom(SMALL_CHUNK),
    "c/e.bin": os.urandom(9 * SMALL_CHUNK + 17),
    "f.bin": os.urandom(3),
    "z-empty": b"",
}


def _concatenated(tree: dict[str, bytes]) -> bytes:
    return b"".join(tree[name] for name in sorted(tree))


def test_sealing_is_the_serial_stream_for_every_thread_count(tmp_path: Path) -> None:
    """The payload equals one StreamEncryptor over the concatenated files, byte for byte."""
    files = collect_source_files(make_tree(tmp_path / "src", TREE), Limits())
    key, package_id = os.urandom(32), os.urandom(16)
    serial = io.BytesIO()
    encrypt_stream(io.BytesIO(_concatenated(TREE)), serial, key, package_id, SMALL_CHUNK)
    expected_manifest = {name: hashlib.sha256(data).hexdigest() for name, data in TREE.items()}
    sealed = serial.getvalue()
    for threads in THREAD_COUNTS:
        for per_segment in (1, 3, 64):
            sink = io.BytesIO()
            entries, segment_sha256 = seal_files(
                files, sink, key, package_id, SMALL_CHUNK, threads, segment_chunks=per_segment
            )
            assert sink.getvalue() == sealed, f"threads={threads}"
            span = per_segment * (SMALL_CHUNK + TAG_SIZE)
            assert segment_sha256 == tuple(
                hashlib.sha256(sealed[start : start + span]).hexdigest()
                for start in range(0, len(sealed), span)
            ), f"threads={threads} segment_chunks={per_segment}"
        assert {entry.path: entry.sha256 for entry in entries} == expected_manifest
        assert [entry.size for entry in entries] == [len(TREE[name]) for name in sorted(TREE)]


def test_parallel_and_serial_builds_sign_the_same_manifest_and_open_alike(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = {}
    for threads in (1, 4):
        monkeypatch.setenv(THREADS_ENV, str(threads))
        built[threads] = packager.build(TREE).path
    serial, parallel = (inspect_package(built[n]).header for n in (1, 4))
    assert serial.files == parallel.files
    assert (serial.payload.length, serial.payload.chunk_count) == (
        parallel.payload.length,
        parallel.payload.chunk_count,
    )
    for package in built.values():
        for threads in (1, 4):
            verify_package(package, trust_store, threads=threads)
            out = tmp_path / f"out-{package.stem}-{threads}"
            open_package(
                package, out, recipient_key=recipients[0], trust_store=trust_store, threads=threads
            )
            assert {name: (out / name).read_bytes() for name in TREE} == TREE


def _payload_region(package: Path) -> tuple[int, int]:
    inspected = inspect_package(package)
    return inspected.package_size - inspected.header.payload.length, inspected.package_size


@pytest.mark.parametrize("threads", [1, 4])
def test_a_flipped_byte_in_any_chunk_is_refused_before_and_after_verification(
    tmp_path: Path,
    packager: Packager,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    threads: int,
) -> None:
    """Verification refuses it (payload digest); decryption alone refuses that very chunk."""
    result = packager.build(TREE)
    package = result.path
    original = package.read_bytes()
    start, end = _payload_region(package)
    payload = result.header.payload
    sealed = SMALL_CHUNK + TAG_SIZE
    package_id = bytes.fromhex(result.header.package_id)
    key = derive_payload_key(recover_data_key(result.header, recipients[0]), package_id)
    for index in range(payload.chunk_count):
        chunk_start = start + index * sealed
        position = chunk_start + (index * 7) % min(sealed, end - chunk_start)
        altered = bytearray(original)
        altered[position] ^= 0x20
        tampered = tmp_path / f"tampered-{threads}-{index}.tgsp"
        tampered.write_bytes(altered)
        with pytest.raises(PayloadDigestError):
            verify_package(tampered, trust_store, threads=threads)
        handle = io.BytesIO(bytes(altered[start:]))
        opened: list[bytes] = []  # SHA-256 of each chunk: a yielded view is reused later
        chunks = decrypt_payload(handle, payload, key, package_id, threads=threads)
        with pytest.raises(ChunkAuthenticationError, match=rf"payload chunk {index}:"):
            opened.extend(hashlib.sha256(chunk).digest() for chunk in chunks)
        assert len(opened) == index, "no plaintext from or after the altered chunk"
        plaintext = _concatenated(TREE)
        assert opened == [
            hashlib.sha256(plaintext[i * SMALL_CHUNK : (i + 1) * SMALL_CHUNK]).digest()
            for i in range(index)
        ]


def test_swapped_chunks_are_refused_at_the_first_swapped_index(
    packager: Packager, recipients: list[XWingPrivateKey]
) -> None:
    result = packager.build(TREE)
    start, _ = _payload_region(result.path)
    body = bytearray(result.path.read_bytes()[start:])
    sealed = SMALL_CHUNK + TAG_SIZE
    body[3 * sealed : 4 * sealed], body[6 * sealed : 7 * sealed] = (
        body[6 * sealed : 7 * sealed],
        body[3 * sealed : 4 * sealed],
    )
    package_id = bytes.fromhex(result.header.package_id)
    key = derive_payload_key(recover_data_key(result.header, recipients[0]), package_id)
    with pytest.raises(ChunkAuthenticationError, match="payload chunk 3:"):
        list(decrypt_payload(io.BytesIO(bytes(body)), result.header.payload, key, package_id, 4))


def test_thread_count_comes_from_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert resolve_threads() == max(1, os.cpu_count() or 1)
    monkeypatch.setenv(THREADS_ENV, "3")
    assert resolve_threads() == 3
    assert resolve_threads(5) == 5
    for bad in ("0", "-2", "many", "1.5", "257"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ConfigurationError, match=THREADS_ENV):
            resolve_threads()
    with pytest.raises(ConfigurationError):
        resolve_threads(0)


def test_read_ahead_is_bounded_in_bytes_whatever_the_thread_count() -> None:
    for threads in (1, 2, 16, 256):
        for chunk_size in (SMALL_CHUNK, 1024 * 1024, 16 * 1024 * 1024):
            chunks = chunks_in_flight(threads, chunk_size)
            assert chunks >= 2
            assert chunks * chunk_size <= max(IN_FLIGHT_BYTES, 2 * chunk_size)


def test_tgsp_commands_import_no_training_pipeline_or_agent_stack(tmp_path: Path) -> None:
    """A real ``tgsp`` command (not only ``--help``) loads no torch, Dagster or edge agent."""
    script = (
        "import sys\n"
        "from tensorguard.cli import main\n"
        f"main(['tgsp', 'inspect', {str(tmp_path / 'missing.tgsp')!r}])\n"
        "import tensorguard.tgsp, tensorguard.tgsp._keyfiles\n"
        "print('\\n'.join(sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    loaded = set(result.stdout.split())
    assert "tensorguard.tgsp._sealing" in loaded, "the package library was not imported"
    heavy = {"torch", "dagster", "numpy", "transformers", "tenseal", "tensorguard.fleet.agent"}
    assert {name for name in loaded if name in heavy or name.split(".")[0] in heavy} == set()


def test_tgsp_verify_and_open_load_neither_yaml_nor_the_liboqs_backend(tmp_path: Path) -> None:
    """Start-up of a successful ``tgsp verify`` / ``tgsp open`` stays light (#19): no YAML
    loader, and the liboqs backend (ctypes, ``ctypes.util`` and ``subprocess``) loads
    only when ``TG_PQC_BACKEND`` names it. The header schema does need pydantic."""
    from tensorguard.cli import ExitCode
    from tests.tgsp.test_cli import Workspace

    workspace = Workspace(tmp_path)
    assert workspace.build() == ExitCode.OK
    for command in (
        ["verify", str(workspace.package), "--trust-store", str(workspace.trust)],
        ["open", str(workspace.package), "-d", str(tmp_path / "out"),
         "--recipient-key", str(workspace.recipient_private), "--trust-store",
         str(workspace.trust)],
    ):  # fmt: skip
        script = (
            "import sys\n"
            "from tensorguard.cli import main\n"
            f"code = main(['tgsp', *{command!r}])\n"
            "print('\\nMODULES', code, ' '.join(sys.modules))\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=True,
        )
        marker, code, *loaded = result.stdout.splitlines()[-1].split()
        assert marker == "MODULES", result.stdout
        assert code == "0", result.stdout + result.stderr
        assert "tensorguard.tgsp._payload" in loaded
        assert "tensorguard.tgsp._header" in loaded
        assert {name.split(".")[0] for name in loaded} & {"yaml", "ctypes"} == set(), command
        assert "tensorguard.crypto._backends.liboqs" not in loaded, command


def test_cli_refuses_a_bad_thread_setting_with_exit_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tensorguard.cli import ExitCode
    from tests.tgsp.test_cli import Workspace

    workspace = Workspace(tmp_path)
    monkeypatch.setenv(THREADS_ENV, "2")
    assert workspace.build() == ExitCode.OK
    monkeypatch.setenv(THREADS_ENV, "zero")
    assert workspace.verify() == ExitCode.CONFIG
    assert workspace.open(tmp_path / "out") == ExitCode.CONFIG
    assert f"{THREADS_ENV}='zero' is not a whole number" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_memory_stays_flat_in_the_payload_size(tmp_path: Path) -> None:
    """Sealing and opening 4 MiB in 1 KiB chunks (4096 chunks) holds a few chunks at once."""
    import tracemalloc

    from tensorguard.tgsp._header import PayloadInfo

    big = tmp_path / "src" / "big.bin"
    big.parent.mkdir()
    big.write_bytes(os.urandom(4 * 1024 * 1024))
    files = collect_source_files(big.parent, Limits())
    key, package_id = os.urandom(32), os.urandom(16)
    sealed_path = tmp_path / "sealed"
    with sealed_path.open("wb") as sink:
        tracemalloc.start()
        try:
            _, segment_sha256 = seal_files(
                files, sink, key, package_id, SMALL_CHUNK, threads=4, segment_chunks=64
            )
            sealing_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    size = sealed_path.stat().st_size
    count = -(-big.stat().st_size // SMALL_CHUNK)
    payload = PayloadInfo(SMALL_CHUNK, count, size, 64, segment_sha256)
    digest = hashlib.sha256()
    with sealed_path.open("rb") as source:
        tracemalloc.start()
        try:
            for plaintext in decrypt_payload(source, payload, key, package_id, threads=4):
                digest.update(plaintext)
            opening_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert digest.digest() == hashlib.sha256(big.read_bytes()).digest()
    assert sealing_peak < 512 * 1024, sealing_peak
    assert opening_peak < 512 * 1024, opening_peak


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_writeback_flushes_on_a_lane_and_reports_its_errors(tmp_path: Path) -> None:
    """Flushes run on duplicates of the descriptor; a failing fdatasync is raised."""
    before = _open_descriptors()
    target = tmp_path / "out.bin"
    with target.open("wb") as sink:
        workers = Workers(2, lanes=1)
        with Writeback(workers, lane=0, every=4096) as writeback, workers:
            for _ in range(8):
                sink.write(os.urandom(4096))
                writeback.wrote(sink.fileno(), 4096)
            writeback.finish()
    assert target.stat().st_size == 8 * 4096
    assert _open_descriptors() == before
    reader, writer = os.pipe()  # fdatasync on a pipe fails with EINVAL: a real I/O error
    try:
        with pytest.raises(OSError, match="Invalid argument"):
            _flush_through_writeback(writer)
    finally:
        os.close(reader)
        os.close(writer)
    assert _open_descriptors() == before


def _flush_through_writeback(fd: int) -> None:
    workers = Workers(2, lanes=1)
    with Writeback(workers, lane=0, every=1) as writeback, workers:
        writeback.wrote(fd, 1)
        writeback.finish()


def _fail_with_flushes_queued(fd: int) -> None:
    import threading

    release = threading.Event()
    workers = Workers(2, lanes=1)
    with Writeback(workers, lane=0, every=1) as writeback, workers:
        workers.in_lane(0, release.wait)  # the lane is busy: flushes queue behind it
        for _ in range(3):
            writeback.wrote(fd, 1)
        threading.Timer(0.2, release.set).start()  # after the lanes' queues are cancelled
        raise RuntimeError("stop")


def test_writeback_closes_the_descriptors_of_flushes_that_never_ran(tmp_path: Path) -> None:
    before = _open_descriptors()
    with (tmp_path / "out.bin").open("wb") as sink, pytest.raises(RuntimeError, match="stop"):
        _fail_with_flushes_queued(sink.fileno())
    assert _open_descriptors() == before


def test_writeback_does_nothing_with_one_thread(tmp_path: Path) -> None:
    with (tmp_path / "out.bin").open("wb") as sink:
        workers = Workers(1, lanes=1)
        with Writeback(workers, lane=0, every=1) as writeback, workers:
            assert not writeback.enabled
            writeback.wrote(sink.fileno(), 10)
            writeback.file_done(sink.fileno())
            writeback.finish()
