"""Load and validate one federation site's training and evaluation data.

A site directory holds ``train.jsonl`` and ``eval.jsonl`` in the schema of
:mod:`tensorguard.training.jsonl` (documented in ``docs/DATA.md``). Loading records
each file's SHA-256 and one combined digest, so a training run can be tied to the exact
bytes it used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tensorguard.digest import sha256_bytes
from tensorguard.training.errors import DatasetError
from tensorguard.training.jsonl import parse_text_records, read_jsonl_bytes

TRAIN_FILE = "train.jsonl"
EVAL_FILE = "eval.jsonl"
SITE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
"""The one site-id rule (the site registry, data directories, key names ``site-<id>``):
1-63 lower-case letters, digits or ``-``, starting with a letter or digit."""


@dataclass(frozen=True)
class SiteDataset:
    """A site's validated texts with the digests of the files they came from.

    ``digest`` is a SHA-256 over the canonical listing of both files (name, size and
    SHA-256 per file, sorted by name), the same construction as
    :func:`tensorguard.digest.sha256_tree` applied to a directory holding only them.
    """

    site_dir: Path
    train_texts: tuple[str, ...]
    eval_texts: tuple[str, ...]
    train_sha256: str
    eval_sha256: str
    digest: str

    @property
    def train_count(self) -> int:
        """Number of training records."""
        return len(self.train_texts)

    @property
    def eval_count(self) -> int:
        """Number of held-out evaluation records."""
        return len(self.eval_texts)


def load_site_dataset(site_dir: Path) -> SiteDataset:
    """Load ``train.jsonl`` and ``eval.jsonl`` from ``site_dir`` and validate them.

    Raises :class:`DatasetError` naming the directory or file (and line) that is
    missing, empty or malformed, with the fix.
    """
    if not site_dir.is_dir():
        raise DatasetError(
            f"{site_dir}: site data directory not found; create it with {TRAIN_FILE} "
            f"and {EVAL_FILE} (see docs/DATA.md) or point the site at an existing directory"
        )
    train_path = site_dir / TRAIN_FILE
    eval_path = site_dir / EVAL_FILE
    train_bytes = read_jsonl_bytes(train_path)
    eval_bytes = read_jsonl_bytes(eval_path)
    train_texts = [record.text for record in parse_text_records(train_path, train_bytes)]
    eval_texts = [record.text for record in parse_text_records(eval_path, eval_bytes)]
    train_sha256 = sha256_bytes(train_bytes)
    eval_sha256 = sha256_bytes(eval_bytes)
    # Sorted by file name, as sha256_tree lists a directory.
    listing = (
        f"{EVAL_FILE}\0{len(eval_bytes)}\0{eval_sha256}\n"
        f"{TRAIN_FILE}\0{len(train_bytes)}\0{train_sha256}\n"
    )
    return SiteDataset(
        site_dir=site_dir,
        train_texts=tuple(train_texts),
        eval_texts=tuple(eval_texts),
        train_sha256=train_sha256,
        eval_sha256=eval_sha256,
        digest=sha256_bytes(listing.encode()),
    )


def resolve_site_dir(sites_root: Path, site_id: str) -> Path:
    """Return ``sites_root / site_id`` after checking the id and that the site exists.

    Site ids follow :data:`SITE_ID_PATTERN` (lower-case letters, digits, ``-``), so
    an id can never escape ``sites_root``. An unknown id raises :class:`DatasetError`
    listing the sites that do exist.
    """
    if not SITE_ID_PATTERN.fullmatch(site_id):
        raise DatasetError(
            f"invalid site id {site_id!r}: use 1-63 lower-case letters, digits or '-', "
            "starting with a letter or digit"
        )
    site_dir = sites_root / site_id
    if not site_dir.is_dir():
        known = (
            sorted(path.name for path in sites_root.iterdir() if path.is_dir())
            if sites_root.is_dir()
            else []
        )
        listing = ", ".join(known) if known else "none"
        raise DatasetError(
            f"unknown site {site_id!r}: {site_dir} does not exist (sites under {sites_root}: "
            f"{listing}); register the site's data directory or fix the site id"
        )
    return site_dir
