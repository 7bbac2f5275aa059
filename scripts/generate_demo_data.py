"""Regenerate the shipped demo site data and base-model corpus under tensorguard/data/.

Usage:
    python scripts/generate_demo_data.py                 # rewrite tensorguard/data/
    python scripts/generate_demo_data.py --output DIR    # write elsewhere
    python scripts/generate_demo_data.py --check         # exit 1 if the shipped files differ

Each demo site draws from a different domain of ``scripts/demo_text.py``; the corpus
mixes all of them with everyday prose and never contains a site's evaluation text.
The output depends only on the seed. The runtime reads the files through
:mod:`tensorguard.training.demo_data` and never runs this script.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections.abc import Mapping
from pathlib import Path

if __package__ in (None, ""):  # run as `python scripts/generate_demo_data.py`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scripts.demo_text import GENERATORS, TextGenerator
from tensorguard.durable import atomic_write_bytes, ensure_directory
from tensorguard.training.dataset import EVAL_FILE, TRAIN_FILE
from tensorguard.training.demo_data import (
    CORPUS_DIRNAME,
    CORPUS_FILE,
    DEMO_SITE_IDS,
    SITES_DIRNAME,
    packaged_data_root,
)

DEMO_SEED = 20240611
SITE_DOMAINS: Mapping[str, str] = {
    "hospital-north": "radiology",
    "clinic-south": "pharmacy",
    "lab-east": "laboratory",
}
TRAIN_RECORDS_PER_SITE = 300
EVAL_RECORDS_PER_SITE = 60
CORPUS_RECORDS: Mapping[str, int] = {
    "general": 600,
    "radiology": 150,
    "pharmacy": 150,
    "laboratory": 150,
}
_MAX_DRAWS_PER_RECORD = 1000

if tuple(SITE_DOMAINS) != DEMO_SITE_IDS:
    raise SystemExit(
        f"SITE_DOMAINS names {tuple(SITE_DOMAINS)} but the package ships {DEMO_SITE_IDS}; "
        "update tensorguard/training/demo_data.py and this script together"
    )


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
    return random.Random(":".join((str(seed), *labels)))


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
    raise ValueError(
        f"the demo generator produced only {len(texts)} distinct texts of {count} requested; "
        "lower the record count or add variety to scripts/demo_text.py"
    )


def _jsonl(id_prefix: str, texts: list[str]) -> bytes:
    lines = (
        json.dumps({"id": f"{id_prefix}-{index:04d}", "text": text}, sort_keys=True)
        for index, text in enumerate(texts)
    )
    return "".join(f"{line}\n" for line in lines).encode("utf-8")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, then write or check the demo data; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--output", type=Path, default=packaged_data_root())
    parser.add_argument("--seed", type=int, default=DEMO_SEED)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        stale = [
            relative
            for relative, content in render_demo_data(args.seed).items()
            if not (args.output / relative).is_file()
            or (args.output / relative).read_bytes() != content
        ]
        for relative in stale:
            print(f"out of date: {args.output / relative}", file=sys.stderr)
        return 1 if stale else 0
    for path in write_demo_data(args.output, seed=args.seed):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
