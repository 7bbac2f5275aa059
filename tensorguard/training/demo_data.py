"""Deterministic demo data: three non-IID federation sites and a base-model corpus.

The files under ``tensorguard/data/`` are produced by :func:`write_demo_data` (run
``scripts/generate_demo_data.py``) and committed, so they ship inside the package.
A test regenerates them and compares byte for byte.

Each demo site draws from a different domain of :mod:`tensorguard.training.demo_text`:
a hospital's radiology reports, a clinic's pharmacy dispensing log and a reference
laboratory's result summaries. Their vocabularies and layouts differ, which is the
non-IID setting federated training has to cope with. The corpus mixes all three
domains with everyday prose; it never contains a site's evaluation texts, so the
held-out evaluation stays held out from the base model too.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path

from tensorguard.durable import atomic_write_bytes, ensure_directory
from tensorguard.training.dataset import EVAL_FILE, TRAIN_FILE
from tensorguard.training.demo_text import GENERATORS, TextGenerator
from tensorguard.training.errors import DatasetError

DEMO_SEED = 20240611
SITE_DOMAINS: Mapping[str, str] = {
    "hospital-north": "radiology",
    "clinic-south": "pharmacy",
    "lab-east": "laboratory",
}
DEMO_SITE_IDS: tuple[str, ...] = tuple(SITE_DOMAINS)
TRAIN_RECORDS_PER_SITE = 300
EVAL_RECORDS_PER_SITE = 60
CORPUS_RECORDS: Mapping[str, int] = {
    "general": 600,
    "radiology": 150,
    "pharmacy": 150,
    "laboratory": 150,
}
SITES_DIRNAME = "demo_sites"
CORPUS_DIRNAME = "corpus"
CORPUS_FILE = "corpus.jsonl"
_MAX_DRAWS_PER_RECORD = 1000


def packaged_data_root() -> Path:
    """Return the ``tensorguard/data`` directory that ships inside the package."""
    return Path(__file__).resolve().parent.parent / "data"


def demo_sites_root(data_root: Path | None = None) -> Path:
    """Return the directory holding one sub-directory per demo site."""
    return (data_root or packaged_data_root()) / SITES_DIRNAME


def default_corpus_dir(data_root: Path | None = None) -> Path:
    """Return the directory of the shipped tokenizer / base-model corpus."""
    return (data_root or packaged_data_root()) / CORPUS_DIRNAME


def render_demo_data(seed: int = DEMO_SEED) -> dict[str, bytes]:
    """Return every demo file as ``{relative POSIX path: content}``, from ``seed`` alone."""
    files: dict[str, bytes] = {}
    held_out: set[str] = set()
    for site_id, domain in SITE_DOMAINS.items():
        generator = GENERATORS[domain]
        taken: set[str] = set()
        eval_texts = _unique_texts(
            generator, _seeded_rng(seed, site_id, "eval"), EVAL_RECORDS_PER_SITE, taken
        )
        train_texts = _unique_texts(
            generator, _seeded_rng(seed, site_id, "train"), TRAIN_RECORDS_PER_SITE, taken
        )
        held_out.update(eval_texts)
        site_prefix = f"{SITES_DIRNAME}/{site_id}"
        files[f"{site_prefix}/{TRAIN_FILE}"] = _jsonl(f"{site_id}-train", train_texts)
        files[f"{site_prefix}/{EVAL_FILE}"] = _jsonl(f"{site_id}-eval", eval_texts)
    corpus: list[str] = []
    for domain, count in CORPUS_RECORDS.items():
        corpus.extend(
            _unique_texts(GENERATORS[domain], _seeded_rng(seed, "corpus", domain), count, held_out)
        )
    _seeded_rng(seed, "corpus", "order").shuffle(corpus)
    files[f"{CORPUS_DIRNAME}/{CORPUS_FILE}"] = _jsonl("corpus", corpus)
    return files


def write_demo_data(data_root: Path, *, seed: int = DEMO_SEED) -> list[Path]:
    """Write every demo file under ``data_root`` and return the paths written.

    Each file is written with :func:`tensorguard.durable.atomic_write_bytes`, so an
    interrupted run never leaves a truncated file.
    """
    written: list[Path] = []
    for relative, content in render_demo_data(seed).items():
        path = data_root / relative
        ensure_directory(path.parent)
        atomic_write_bytes(path, content)
        written.append(path)
    return written


def _seeded_rng(seed: int, *labels: str) -> random.Random:
    """Return an independent, reproducible stream per (seed, labels).

    String seeds are hashed with SHA-512 by :mod:`random`, so streams are stable across
    runs and platforms. Deliberately non-cryptographic: this only invents demo text.
    """
    return random.Random(":".join((str(seed), *labels)))  # noqa: S311


def _unique_texts(
    generator: TextGenerator, rng: random.Random, count: int, taken: set[str]
) -> list[str]:
    """Draw ``count`` texts not in ``taken``; add each one drawn to ``taken``."""
    texts: list[str] = []
    for _ in range(count * _MAX_DRAWS_PER_RECORD):
        if len(texts) == count:
            return texts
        text = generator(rng)
        if text not in taken:
            taken.add(text)
            texts.append(text)
    if len(texts) == count:
        return texts
    raise DatasetError(
        f"the demo generator produced only {len(texts)} distinct texts of {count} requested; "
        "lower the record count or add variety to tensorguard/training/demo_text.py"
    )


def _jsonl(id_prefix: str, texts: list[str]) -> bytes:
    lines = (
        json.dumps({"id": f"{id_prefix}-{index:04d}", "text": text}, sort_keys=True)
        for index, text in enumerate(texts)
    )
    return "".join(f"{line}\n" for line in lines).encode("utf-8")
