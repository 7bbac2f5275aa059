"""An exclusive advisory lock on an open lock file: one writer of a directory at a time.

The caller opens the lock file (so it can say, in its own words, why that failed);
:func:`held_exclusively` takes the ``flock`` exclusive lock, releases it when the block
ends, and closes the file.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any


@contextmanager
def held_exclusively(handle: IO[Any]) -> Iterator[None]:
    """Hold ``handle``'s exclusive ``flock`` for the block (waiting for it), then close it."""
    with handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
