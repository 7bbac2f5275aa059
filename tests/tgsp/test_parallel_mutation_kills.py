"""The worker pool, its ordered lanes and the writeback, pinned at their edges (#18 item 6).

``tensorguard/tgsp/_parallel.py`` decides how many worker threads run, how many chunks
are read ahead, where each call runs, and when written data is flushed. These tests pin:
the thread count's bounds and its CPU fallback (including a host whose CPU count is
unknown: ``os.cpu_count()`` returns ``None`` there, simulated with ``monkeypatch``, the
only stand-in here), the refusal of a non-numeric ``TG_TGSP_THREADS`` word for word, the
read-ahead depth, that one thread runs everything on the caller's thread and more run on
named ``tgsp-worker``/``tgsp-lane<N>`` threads (the names a thread dump shows), that
leaving the pool cancels queued lane work and waits for running work, and exactly when
:class:`Writeback` starts a flush. A flush is seen through a pipe: ``fdatasync`` on a pipe
fails with EINVAL, so a flush that was started surfaces as that error from ``wrote``,
``file_done`` or ``finish``, and one that was not started raises nothing.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path

import pytest

from tensorguard.errors import ConfigurationError
from tensorguard.tgsp._parallel import (
    MAX_THREADS,
    THREADS_ENV,
    WRITEBACK_MIN_BYTES,
    WRITEBACK_PENDING,
    Workers,
    Writeback,
    chunks_in_flight,
    resolve_threads,
)

MIB = 1024 * 1024


# --- how many threads ---------------------------------------------------------------------


@pytest.mark.parametrize(("cpus", "expected"), [(None, 1), (1, 1), (3, 3), (1000, MAX_THREADS)])
def test_without_a_setting_there_is_one_thread_per_cpu(
    monkeypatch: pytest.MonkeyPatch, cpus: int | None, expected: int
) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    assert resolve_threads() == expected
    monkeypatch.setenv(THREADS_ENV, "  ")
    assert resolve_threads() == expected


def test_the_thread_bounds_are_inclusive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert resolve_threads(1) == 1
    assert resolve_threads(MAX_THREADS) == MAX_THREADS == 256
    monkeypatch.setenv(THREADS_ENV, " 256 ")
    assert resolve_threads() == 256
    for bad in (0, 257):
        with pytest.raises(ConfigurationError) as raised:
            resolve_threads(bad)
        assert str(raised.value) == (
            f"TGSP worker threads must be 1..256, got {bad} (argument or TG_TGSP_THREADS)"
        )


def test_a_setting_that_is_not_a_number_is_refused_word_for_word(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(THREADS_ENV, " four ")
    with pytest.raises(ConfigurationError) as raised:
        resolve_threads()
    assert str(raised.value) == (
        "TG_TGSP_THREADS='four' is not a whole number; set it to 1..256 worker threads, "
        "or unset it to use one per CPU"
    )


@pytest.mark.parametrize(
    ("threads", "chunk_size", "expected"),
    [
        (1, 1024, 4),  # 2 * threads + 2
        (3, 1024, 8),
        (7, MIB, 16),  # 16 MiB of plaintext at most
        (100, 3 * MIB, 5),  # 16 MiB // 3 MiB, rounded down
        (100, 16 * MIB, 2),  # never fewer than two
    ],
)
def test_read_ahead_depth(threads: int, chunk_size: int, expected: int) -> None:
    depth = chunks_in_flight(threads, chunk_size)
    assert depth == expected
    assert type(depth) is int


# --- where calls run ----------------------------------------------------------------------


def _thread_name() -> str:
    return threading.current_thread().name


def _call(*args: object, **kwargs: object) -> tuple[str, tuple[object, ...], dict[str, object]]:
    return _thread_name(), args, kwargs


def test_one_thread_runs_everything_on_the_callers_thread() -> None:
    caller = _thread_name()
    with Workers(1, lanes=2) as workers:
        assert workers.submit(_call, 1, two=2).result() == (caller, (1,), {"two": 2})
        assert workers.in_lane(1, _call, 3, four=4).result() == (caller, (3,), {"four": 4})
        failed = workers.in_lane(0, int, "not a number")
        assert isinstance(failed.exception(), ValueError)


def test_more_threads_run_on_named_pool_and_lane_threads() -> None:
    with Workers(3, lanes=2) as workers:
        name, args, kwargs = workers.submit(_call, 1, two=2).result()
        assert name.startswith("tgsp-worker_")
        assert (args, kwargs) == ((1,), {"two": 2})
        assert workers.in_lane(0, _call, 3, four=4).result() == ("tgsp-lane0_0", (3,), {"four": 4})
        assert workers.in_lane(1, _call).result() == ("tgsp-lane1_0", (), {})


def test_without_lanes_ordered_work_runs_on_the_callers_thread() -> None:
    caller = _thread_name()
    with Workers(3) as workers:
        assert workers.in_lane(0, _call, x=1).result() == (caller, (), {"x": 1})
        assert workers.submit(_thread_name).result().startswith("tgsp-worker_")


def _wait_until(condition: Callable[[], bool], limit: float = 3.0) -> None:
    deadline = time.monotonic() + limit
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_leaving_cancels_queued_lane_work_and_waits_for_running_work() -> None:
    """Both running calls wait until the queued call is cancelled (which happens only
    when the ``with`` block is left), then take a moment: leaving must wait for them."""
    ran: list[str] = []
    queued: list[Future[None]] = []

    def running(label: str) -> None:
        _wait_until(lambda: bool(queued) and queued[0].cancelled())
        time.sleep(0.1)
        ran.append(label)

    with Workers(2, lanes=1) as workers:
        workers.in_lane(0, running, "lane")
        workers.submit(running, "pool")
        queued.append(workers.in_lane(0, ran.append, "queued"))
    assert queued[0].cancelled()
    assert sorted(ran) == ["lane", "pool"]


# --- when the writeback flushes -----------------------------------------------------------


@contextmanager
def _pipe() -> Iterator[int]:
    """A descriptor whose ``fdatasync`` fails with EINVAL: a started flush is an error."""
    reader, writer = os.pipe()
    try:
        yield writer
    finally:
        os.close(reader)
        os.close(writer)


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_flush_starts_when_the_written_bytes_reach_the_interval() -> None:
    with _pipe() as fd:
        workers = Workers(2, lanes=1)
        with Writeback(workers, lane=0, every=100) as writeback, workers:
            writeback.wrote(fd, 60)
            writeback.wrote(fd, 39)
            writeback.finish()  # 99 bytes: nothing started
            writeback.wrote(fd, 1)
            with pytest.raises(OSError, match="Invalid argument"):
                writeback.finish()
            writeback.wrote(fd, 99)  # the count restarts from zero after a flush
            writeback.finish()
            writeback.wrote(fd, 1)
            with pytest.raises(OSError, match="Invalid argument"):
                writeback.finish()


def test_a_finished_file_is_flushed_from_the_minimum_on() -> None:
    with _pipe() as fd:
        workers = Workers(2, lanes=1)
        with Writeback(workers, lane=0, every=1 << 40) as writeback, workers:
            writeback.wrote(fd, WRITEBACK_MIN_BYTES - 1)
            writeback.file_done(fd)
            writeback.finish()
            writeback.wrote(fd, 1)
            writeback.file_done(fd)
            with pytest.raises(OSError, match="Invalid argument"):
                writeback.finish()


def test_one_thread_never_flushes() -> None:
    with _pipe() as fd:
        workers = Workers(1, lanes=1)
        with Writeback(workers, lane=0, every=1) as writeback, workers:
            writeback.wrote(fd, WRITEBACK_MIN_BYTES)
            writeback.file_done(fd)
            writeback.finish()


def test_a_failed_flush_surfaces_at_the_next_write() -> None:
    with _pipe() as fd:
        workers = Workers(2, lanes=1)
        with Writeback(workers, lane=0, every=1) as writeback, workers:
            writeback.wrote(fd, 1)
            workers.in_lane(0, int).result()  # the lane ran the flush before this
            with pytest.raises(OSError, match="Invalid argument"):
                writeback.wrote(fd, 1)


def test_at_most_a_few_flushes_wait_each_holding_a_descriptor(tmp_path: Path) -> None:
    """The lane is held until four flushes are queued; the fifth write must wait for the
    first flush instead of queueing a fifth descriptor."""
    before = _open_descriptors()
    go = threading.Event()
    held: list[int] = []

    def busy() -> None:
        go.wait(10)
        time.sleep(0.1)

    with (tmp_path / "out.bin").open("wb") as sink:
        opened = _open_descriptors()
        workers = Workers(2, lanes=1)
        with Writeback(workers, lane=0, every=1) as writeback, workers:
            workers.in_lane(0, busy)
            for index in range(WRITEBACK_PENDING + 2):
                if index == WRITEBACK_PENDING:
                    go.set()
                writeback.wrote(sink.fileno(), 1)
                held.append(_open_descriptors() - opened)
            writeback.finish()
    assert held[:WRITEBACK_PENDING] == [1, 2, 3, 4]
    assert max(held) == WRITEBACK_PENDING == 4
    assert _open_descriptors() == before


def test_a_flush_that_cannot_be_queued_closes_its_descriptor(tmp_path: Path) -> None:
    with (tmp_path / "out.bin").open("wb") as sink:
        opened = _open_descriptors()
        workers = Workers(2, lanes=1)
        with workers:
            pass
        with (
            Writeback(workers, lane=0, every=1) as writeback,
            pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"),
        ):
            writeback.wrote(sink.fileno(), 1)
        assert _open_descriptors() == opened
