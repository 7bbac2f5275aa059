"""Write a directory atomically: build it beside its destination, then rename it in.

Readers either see the previous complete directory or the new complete one, never a
half-written one. A failure while building removes the temporary directory and leaves
the destination as it was.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tensorguard.training.errors import TrainingError

PUBLISHED_DIRECTORY_MODE = 0o755


@contextmanager
def atomic_directory(output_dir: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``output_dir`` on success.

    The temporary directory is created in ``output_dir``'s parent, so the final rename
    stays on one file system. An existing ``output_dir`` is replaced only after the new
    content is complete; if the body raises, ``output_dir`` is untouched.
    """
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TrainingError(
            f"cannot create the parent directory {parent} for {output_dir}: "
            f"{exc.strerror or exc}; check the path and its permissions"
        ) from exc
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=parent))
    try:
        staging.chmod(PUBLISHED_DIRECTORY_MODE)
        yield staging
        _replace_directory(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_directory(staging: Path, output_dir: Path) -> None:
    """Move ``staging`` to ``output_dir``, swapping out any previous directory."""
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise TrainingError(
            f"{output_dir} exists and is not a directory; remove it or choose another output path"
        )
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    retired = Path(
        tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".old", dir=output_dir.parent)
    )
    retired.rmdir()
    os.replace(output_dir, retired)
    try:
        os.replace(staging, output_dir)
    except OSError:
        os.replace(retired, output_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)
