"""Building a package: every refusal in full, and the caller's settings honoured (#18 item 6).

``tensorguard/tgsp/_builder.py`` checks its inputs before it reads a byte of the source
(chunk size, an existing output, the recipients, the thread count), then writes the
package under a temporary name and links it only when it is complete. These tests pin
each refusal word for word (an operator reads them from ``tensorguard tgsp build``), that
nothing is left behind after one, that a package appearing at the output name during the
build is never replaced, that the caller's PQC backend does the encapsulation (checked
against kyber-py, an independent ML-KEM), that an explicit thread count wins over
``TG_TGSP_THREADS``, and the package file's mode. Real files in temporary directories;
the stand-ins are signers, as a faulty hardware token would behave: one returning a
signature of the wrong size, one signing other bytes, one during whose signing another
writer creates the output file.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kyber_py.ml_kem import ML_KEM_768

from tensorguard.crypto import (
    CompositeSigningKey,
    CompositeVerifyKey,
    SignatureError,
    XWingPrivateKey,
)
from tensorguard.errors import ConfigurationError
from tensorguard.tgsp import (
    BuildError,
    HeaderTooLargeError,
    Limits,
    TrustStore,
    build_package,
    open_package,
)
from tensorguard.tgsp._builder import choose_segment_chunks
from tensorguard.tgsp._format import (
    DEFAULT_LIMITS,
    MAX_CHUNK_SIZE,
    MAX_SEGMENT_CHUNKS,
    MIN_CHUNK_SIZE,
    SIGNATURE_CONTEXT,
)
from tensorguard.tgsp._parallel import THREADS_ENV
from tests.crypto.kyber_py_backend import KyberPyEncapsulation
from tests.tgsp.conftest import SMALL_CHUNK, make_release, make_tree

FILES = {"adapter_config.json": b"{}", "weights/adapter.bin": bytes(range(256)) * 9}


def _source(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "source", FILES)


def _build(
    tmp_path: Path,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    output: Path | None = None,
    **options: object,
) -> Path:
    target = output if output is not None else tmp_path / "release.tgsp"
    settings: dict[str, object] = {"signer": producer, "chunk_size": SMALL_CHUNK, **options}
    build_package(
        _source(tmp_path),
        target,
        recipients=[key.public_key() for key in recipients],
        release=make_release(),
        **settings,  # type: ignore[arg-type]
    )
    return target


def _refusal(
    tmp_path: Path,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    error: type[Exception] = BuildError,
    **options: object,
) -> str:
    """Build into ``tmp_path/out``; return the refusal's message; check nothing was left."""
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    before = sorted(out.iterdir())
    with pytest.raises(error) as raised:
        _build(tmp_path, producer, recipients, out / "release.tgsp", **options)
    assert sorted(out.iterdir()) == before, "a refused build leaves nothing behind"
    return str(raised.value)


# --- recipients ---------------------------------------------------------------------------


def test_no_recipient_is_refused(tmp_path: Path, producer: CompositeSigningKey) -> None:
    assert _refusal(tmp_path, producer, []) == "a package needs at least one recipient public key"


def test_a_recipient_listed_twice_is_refused(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    twice = [recipients[0], recipients[1], recipients[0]]
    assert _refusal(tmp_path, producer, twice) == "the same recipient key is listed twice"


def test_the_recipient_limit_is_inclusive(
    tmp_path: Path,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    limits = Limits(max_recipients=2)
    message = _refusal(tmp_path, producer, recipients[:3], HeaderTooLargeError, limits=limits)
    assert message == "3 recipients exceed the limit of 2"
    package = _build(tmp_path, producer, recipients[:2], limits=limits)
    for key in recipients[:2]:
        destination = tmp_path / f"open-{key.public_key().fingerprint()[:8]}"
        open_package(package, destination, recipient_key=key, trust_store=trust_store)
        assert (destination / "adapter_config.json").read_bytes() == b"{}"


# --- chunk size and segments --------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [MIN_CHUNK_SIZE - 1, MAX_CHUNK_SIZE + 1])
def test_a_chunk_size_out_of_range_is_refused(
    tmp_path: Path,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    chunk_size: int,
) -> None:
    out = tmp_path / "out.tgsp"
    with pytest.raises(BuildError) as raised:
        build_package(
            _source(tmp_path),
            out,
            signer=producer,
            recipients=[recipients[0].public_key()],
            release=make_release(),
            chunk_size=chunk_size,
        )
    assert str(raised.value) == "chunk size must be 1024..16777216 bytes"
    assert not out.exists()


@pytest.mark.parametrize("chunk_size", [MIN_CHUNK_SIZE, MAX_CHUNK_SIZE])
def test_the_chunk_size_bounds_are_inclusive(
    tmp_path: Path,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    chunk_size: int,
) -> None:
    out = tmp_path / "release.tgsp"
    result = build_package(
        _source(tmp_path),
        out,
        signer=producer,
        recipients=[recipients[0].public_key()],
        release=make_release(),
        chunk_size=chunk_size,
    )
    assert result.header.payload.chunk_size == chunk_size
    open_package(out, tmp_path / "opened", recipient_key=recipients[0], trust_store=trust_store)
    assert (tmp_path / "opened" / "weights/adapter.bin").read_bytes() == FILES[
        "weights/adapter.bin"
    ]


def test_requested_segment_sizes_are_checked_inclusively() -> None:
    assert choose_segment_chunks(5, SMALL_CHUNK, DEFAULT_LIMITS, requested=1) == 1
    assert (
        choose_segment_chunks(5, SMALL_CHUNK, DEFAULT_LIMITS, requested=MAX_SEGMENT_CHUNKS)
        == MAX_SEGMENT_CHUNKS
    )
    for bad in (0, MAX_SEGMENT_CHUNKS + 1):
        with pytest.raises(BuildError) as raised:
            choose_segment_chunks(5, SMALL_CHUNK, DEFAULT_LIMITS, requested=bad)
        assert str(raised.value) == f"segment_chunks must be 1..1048576, got {bad}"


def test_a_segment_holds_at_least_one_chunk_whatever_the_chunk_size() -> None:
    """Chunks larger than the 16 MiB segment target still get one chunk per segment."""
    assert choose_segment_chunks(0, 2 * MAX_CHUNK_SIZE, DEFAULT_LIMITS) == 1
    assert choose_segment_chunks(3, 2 * MAX_CHUNK_SIZE, DEFAULT_LIMITS) == 1


# --- the output file ----------------------------------------------------------------------


def test_an_existing_output_is_refused_before_the_source_is_read(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    output = tmp_path / "release.tgsp"
    output.write_bytes(b"an earlier release")
    with pytest.raises(BuildError) as raised:
        build_package(
            tmp_path / "no-such-source",  # would be refused too, but only after the output
            output,
            signer=producer,
            recipients=[recipients[0].public_key()],
            release=make_release(),
        )
    assert str(raised.value) == f"{output} already exists; choose another name or remove it"
    assert output.read_bytes() == b"an earlier release"


def test_a_dangling_symlink_at_the_output_is_refused_and_kept(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    output = tmp_path / "release.tgsp"
    output.symlink_to(tmp_path / "elsewhere.tgsp")
    with pytest.raises(BuildError) as raised:
        _build(tmp_path, producer, recipients[:1], output)
    assert str(raised.value) == f"{output} already exists; choose another name or remove it"
    assert output.is_symlink()
    assert not (tmp_path / "elsewhere.tgsp").exists()


class _CreatesTheOutput:
    """A signer during whose signing another writer creates the package's file name."""

    def __init__(self, key: CompositeSigningKey, output: Path) -> None:
        self._key = key
        self._output = output

    def public_key(self) -> CompositeVerifyKey:
        return self._key.public_key()

    def sign(self, message: bytes, context: bytes = b"") -> bytes:
        self._output.write_bytes(b"written by someone else")
        return self._key.sign(message, context)


def test_an_output_created_during_the_build_is_never_replaced(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    output = tmp_path / "out" / "release.tgsp"
    output.parent.mkdir()
    with pytest.raises(BuildError) as raised:
        build_package(
            _source(tmp_path),
            output,
            signer=_CreatesTheOutput(producer, output),
            recipients=[recipients[0].public_key()],
            release=make_release(),
            chunk_size=SMALL_CHUNK,
        )
    assert str(raised.value) == f"{output} already exists; choose another name or remove it"
    assert output.read_bytes() == b"written by someone else"
    assert sorted(output.parent.iterdir()) == [output], "no temporary file left"


def test_an_output_in_a_missing_directory_is_refused_with_the_reason(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    output = tmp_path / "missing" / "release.tgsp"
    with pytest.raises(BuildError) as raised:
        _build(tmp_path, producer, recipients[:1], output)
    assert str(raised.value) == (
        f"cannot write {output}: cannot create a temporary file beside {output}: "
        "No such file or directory; check that the directory exists and is writable"
    )
    assert not output.parent.exists()


@contextmanager
def _file_size_limit(limit: int) -> Iterator[None]:
    """Writes past ``limit`` bytes fail with EFBIG in this process (as on a full quota)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_failed_write_names_the_reason_and_the_remedy(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    source = make_tree(tmp_path / "big", {"weights.bin": os.urandom(1024 * 1024)})
    output = tmp_path / "out" / "release.tgsp"
    output.parent.mkdir()
    with pytest.raises(BuildError) as raised, _file_size_limit(256 * 1024):
        build_package(
            source,
            output,
            signer=producer,
            recipients=[recipients[0].public_key()],
            release=make_release(),
            chunk_size=64 * 1024,
            threads=1,
        )
    assert str(raised.value) == (
        f"cannot write {output}: File too large; free space on its file system "
        "(or raise the quota / file-size limit) and build again; no package was left"
    )
    assert list(output.parent.iterdir()) == []


def _umask() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    raise AssertionError("no Umask line in /proc/self/status")


def test_the_package_is_readable_by_everyone_and_writable_by_its_owner(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    package = _build(tmp_path, producer, recipients[:1])
    assert stat.S_IMODE(package.stat().st_mode) == 0o644 & ~_umask()


# --- signing ------------------------------------------------------------------------------


class _ShortSignature:
    """A token that returns a truncated signature."""

    def __init__(self, key: CompositeSigningKey) -> None:
        self._key = key

    def public_key(self) -> CompositeVerifyKey:
        return self._key.public_key()

    def sign(self, message: bytes, context: bytes = b"") -> bytes:
        return self._key.sign(message, context)[:100]


class _SignsOtherBytes(_ShortSignature):
    """A token that signs something other than what it was given."""

    def sign(self, message: bytes, context: bytes = b"") -> bytes:
        return self._key.sign(message + b"!", context)


def test_a_signature_of_the_wrong_size_is_refused(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    message = _refusal(tmp_path, producer, recipients[:1], signer=_ShortSignature(producer))
    assert message == "signer returned 100 bytes, not a composite signature"


def test_a_signature_its_own_key_rejects_is_refused(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    key_id = producer.public_key().fingerprint()
    with pytest.raises(SignatureError) as expected:  # what the key says of such a signature
        producer.public_key().verify(
            b"header", producer.sign(b"header!", SIGNATURE_CONTEXT), SIGNATURE_CONTEXT
        )
    with pytest.raises(BuildError) as raised:
        build_package(
            _source(tmp_path),
            tmp_path / "release.tgsp",
            signer=_SignsOtherBytes(producer),
            recipients=[recipients[0].public_key()],
            release=make_release(),
        )
    assert str(raised.value) == (
        f"signer {key_id[:16]} produced a signature its own public key rejects: {expected.value}"
    )
    assert isinstance(raised.value.__cause__, SignatureError)
    assert not (tmp_path / "release.tgsp").exists()


# --- the caller's backend and thread count ------------------------------------------------


def test_the_callers_backend_encapsulates_to_every_recipient(
    tmp_path: Path,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
) -> None:
    chosen = recipients[:2]
    output = tmp_path / "release.tgsp"
    result = build_package(
        _source(tmp_path),
        output,
        signer=producer,
        recipients=[key.public_key() for key in chosen],
        release=make_release(),
        chunk_size=SMALL_CHUNK,
        backend=KyberPyEncapsulation(),
    )
    blocks = {block.recipient_id: block for block in result.header.recipients}
    for key in chosen:
        public = key.public_key()
        _, expected = ML_KEM_768._encaps_internal(
            public.mlkem_public_bytes, KyberPyEncapsulation.RANDOMNESS
        )
        assert blocks[public.fingerprint()].kem_ciphertext[: len(expected)] == expected
        destination = tmp_path / f"open-{public.fingerprint()[:8]}"
        open_package(output, destination, recipient_key=key, trust_store=trust_store)
        assert (destination / "weights/adapter.bin").read_bytes() == FILES["weights/adapter.bin"]


def test_an_explicit_thread_count_wins_over_the_environment(
    tmp_path: Path,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    trust_store: TrustStore,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(THREADS_ENV, "lots")
    for threads in (1, 2):
        output = tmp_path / f"release-{threads}.tgsp"
        _build(tmp_path / f"t{threads}", producer, recipients[:1], output, threads=threads)
        destination = tmp_path / f"open-{threads}"
        open_package(
            output,
            destination,
            recipient_key=recipients[0],
            trust_store=trust_store,
            threads=threads,
        )
        assert (destination / "adapter_config.json").read_bytes() == b"{}"


def test_an_explicit_thread_count_out_of_range_is_refused(
    tmp_path: Path,
    producer: CompositeSigningKey,
    recipients: list[XWingPrivateKey],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    message = _refusal(tmp_path, producer, recipients[:1], ConfigurationError, threads=0)
    assert message == f"TGSP worker threads must be 1..256, got 0 (argument or {THREADS_ENV})"


def test_limits_are_passed_through_to_the_header(
    tmp_path: Path, producer: CompositeSigningKey, recipients: list[XWingPrivateKey]
) -> None:
    """A header over the caller's byte limit is refused although the default would pass."""
    tight = dataclasses.replace(DEFAULT_LIMITS, max_header_bytes=1024)
    with pytest.raises(HeaderTooLargeError):
        _build(tmp_path, producer, recipients[:2], limits=tight)
    assert not (tmp_path / "release.tgsp").exists()
