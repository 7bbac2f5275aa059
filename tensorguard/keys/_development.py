"""A persistent development master secret, so demo keys survive between runs.

Development runs (``make demo``, the Dagster UI) span many processes: a throwaway
master per process would lose every key between runs. Instead, when no
``TG_KEY_MASTER`` is configured in development, a random master is generated once
into a 0600 file next to the artifacts and reused. It is a development convenience
that callers must announce loudly; production refuses it.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from tensorguard.durable import atomic_write_bytes
from tensorguard.keys._errors import KeyProviderProductionError
from tensorguard.keys._master import MASTER_ENV, MASTER_HOW_TO
from tensorguard.production import is_production

MASTER_BYTES = 48


def development_master(path: Path) -> tuple[str, bool]:
    """Return the development master stored at ``path`` and whether it was just created.

    Raises :class:`KeyProviderProductionError` in production: there, ``TG_KEY_MASTER``
    must come from the operator's secret manager.
    """
    if is_production():
        raise KeyProviderProductionError(
            f"{MASTER_ENV} is not set: production never uses a development master; {MASTER_HOW_TO}"
        )
    if path.is_file():
        return path.read_text(encoding="utf-8").strip(), False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    value = secrets.token_urlsafe(MASTER_BYTES)
    atomic_write_bytes(path, (value + "\n").encode("utf-8"), mode=0o600, overwrite=False)
    return value, True
