"""Worker threads for TGSP: how many, and ordered lanes that keep the stream's order.

The format fixes what must stay sequential: each file's SHA-256, the SHA-256 of the
sealed payload, and the order of chunks in the file. AES-GCM of one chunk does not
depend on any other (its nonce is the chunk index and the final flag), so sealing and
opening run on a pool of worker threads while two single-thread *lanes* keep the
ordered work (hashing, writing) in chunk order. ``hashlib`` and AES-GCM in
``cryptography`` release the GIL on large buffers, so the threads use several cores.

The number of worker threads is ``threads`` when a caller passes it, else the
``TG_TGSP_THREADS`` environment variable, else ``os.cpu_count()``. With 1, everything
runs in the calling thread (the serial path; same bytes out). Memory is bounded: at
most :func:`chunks_in_flight` chunks are read ahead, whatever the package size.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from tensorguard.durable import flush_descriptor_data
from tensorguard.errors import ConfigurationError

THREADS_ENV = "TG_TGSP_THREADS"
MAX_THREADS = 256
IN_FLIGHT_BYTES = 16 * 1024 * 1024
"""Plaintext bytes read ahead at most (plus as many sealed bytes)."""
WRITEBACK_BYTES = 64 * 1024 * 1024
"""Written bytes after which :class:`Writeback` starts flushing them to disk."""
WRITEBACK_MIN_BYTES = 1024 * 1024
"""A finished file with fewer unflushed bytes is left to the final flush."""
WRITEBACK_PENDING = 4
"""Flushes queued at most (each holds a duplicate file descriptor)."""

T = TypeVar("T")


def resolve_threads(threads: int | None = None) -> int:
    """Return the worker thread count: ``threads``, else ``TG_TGSP_THREADS``, else CPUs."""
    if threads is None:
        raw = os.environ.get(THREADS_ENV, "").strip()
        if not raw:
            return max(1, min(os.cpu_count() or 1, MAX_THREADS))
        try:
            threads = int(raw)
        except ValueError:
            raise ConfigurationError(
                f"{THREADS_ENV}={raw!r} is not a whole number; set it to 1..{MAX_THREADS} "
                "worker threads, or unset it to use one per CPU"
            ) from None
    if not 1 <= threads <= MAX_THREADS:
        raise ConfigurationError(
            f"TGSP worker threads must be 1..{MAX_THREADS}, got {threads} "
            f"(argument or {THREADS_ENV})"
        )
    return threads


def chunks_in_flight(threads: int, chunk_size: int) -> int:
    """How many chunks may be read ahead: enough to keep ``threads`` busy, bounded in bytes."""
    return max(2, min(2 * threads + 2, IN_FLIGHT_BYTES // chunk_size))


class Workers:
    """A pool for independent work plus single-thread lanes for ordered work.

    With one thread nothing is started: :meth:`submit` and :meth:`in_lane` run the call
    at once and return a finished future, so the serial path is the same code. Use as a
    context manager; on exit, queued work is cancelled and running work is waited for,
    so no thread touches a file after the caller closed it.
    """

    def __init__(self, threads: int, lanes: int = 0) -> None:
        """Start ``threads`` pool workers (none if 1) and ``lanes`` ordered lanes."""
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._lanes: list[ThreadPoolExecutor] = []
        if threads > 1:
            self._pool = ThreadPoolExecutor(threads, thread_name_prefix="tgsp-worker")
            self._lanes = [
                ThreadPoolExecutor(1, thread_name_prefix=f"tgsp-lane{index}")
                for index in range(lanes)
            ]

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_: object) -> None:
        for executor in [*self._lanes, *([self._pool] if self._pool else [])]:
            executor.shutdown(wait=True, cancel_futures=True)

    def submit(self, function: Callable[..., T], *args: object, **kwargs: object) -> Future[T]:
        """Run ``function`` on the pool (in any order relative to other calls)."""
        if self._pool is None:
            return _done(function, *args, **kwargs)
        return self._pool.submit(function, *args, **kwargs)

    def in_lane(
        self, lane: int, function: Callable[..., T], *args: object, **kwargs: object
    ) -> Future[T]:
        """Run ``function`` on lane ``lane``, after everything submitted to it before."""
        if not self._lanes:
            return _done(function, *args, **kwargs)
        return self._lanes[lane].submit(function, *args, **kwargs)


def _flush(fd: int) -> None:
    try:
        flush_descriptor_data(fd)
    finally:
        os.close(fd)


class Writeback:
    """Flushes written data to disk on a lane while the work goes on.

    A package or an extracted tree is fsynced before it is published; without this, the
    kernel holds up to gigabytes of dirty pages until that final fsync, which then waits
    for all of them. Here, every :data:`WRITEBACK_BYTES` written (and when a file of at
    least :data:`WRITEBACK_MIN_BYTES` unflushed bytes is finished), ``fdatasync`` runs on
    a duplicate of the file descriptor in lane ``lane``, so writeback overlaps hashing and
    encryption and the final fsync finds little left to do. It changes nothing about what
    is durable when (the caller's final fsync still decides that). With one worker thread
    it does nothing. Errors (EIO, ENOSPC) surface as :class:`OSError` from :meth:`wrote`,
    :meth:`file_done` or :meth:`finish`. Enter it *around* the :class:`Workers` context,
    so that on a failure it runs after the lanes stopped and closes the descriptors of
    flushes that never ran.
    """

    def __init__(self, workers: Workers, lane: int, every: int = WRITEBACK_BYTES) -> None:
        """Flush through ``workers``' lane ``lane`` every ``every`` written bytes."""
        self._workers = workers
        self._lane = lane
        self._every = every
        self._unflushed = 0
        self._pending: deque[tuple[Future[None], int]] = deque()
        self.enabled = workers.threads > 1

    def __enter__(self) -> Writeback:
        return self

    def __exit__(self, *_: object) -> None:
        while self._pending:
            future, fd = self._pending.popleft()
            if future.cancel():  # never ran: the descriptor is still ours to close
                os.close(fd)

    def wrote(self, fd: int, count: int) -> None:
        """Record ``count`` bytes written to ``fd``; start a flush when enough are pending."""
        self._unflushed += count
        if self.enabled and self._unflushed >= self._every:
            self._start(fd)

    def file_done(self, fd: int) -> None:
        """``fd``'s file is complete (still open): flush it now unless only a little is left."""
        if self.enabled and self._unflushed >= WRITEBACK_MIN_BYTES:
            self._start(fd)

    def finish(self) -> None:
        """Wait for every flush started so far; raise the first error."""
        while self._pending:
            future, _ = self._pending.popleft()
            future.result()

    def _start(self, fd: int) -> None:
        while self._pending and (
            self._pending[0][0].done() or len(self._pending) >= WRITEBACK_PENDING
        ):
            future, _ = self._pending.popleft()
            future.result()
        self._unflushed = 0
        owned = os.dup(fd)
        try:
            future = self._workers.in_lane(self._lane, _flush, owned)
        except BaseException:
            os.close(owned)
            raise
        self._pending.append((future, owned))


def _done(function: Callable[..., T], *args: object, **kwargs: object) -> Future[T]:
    future: Future[T] = Future()
    try:
        future.set_result(function(*args, **kwargs))
    except BaseException as exc:  # delivered by .result(), as from a worker thread
        future.set_exception(exc)
    return future
