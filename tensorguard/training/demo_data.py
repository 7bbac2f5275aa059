"""Where the shipped demo data lives: three non-IID federation sites and a corpus.

The files under ``tensorguard/data/`` are generated from a seed by
``scripts/generate_demo_data.py`` (with the text templates of ``scripts/demo_text.py``)
and committed, so they ship inside the package; a test regenerates them and compares
byte for byte. The runtime only reads them: this module names the sites and the
directories.

The demo sites are a hospital's radiology reports, a clinic's pharmacy dispensing log
and a reference laboratory's result summaries. Their vocabularies and layouts differ,
which is the non-IID setting federated training has to cope with. The corpus mixes all
three domains with everyday prose; it never contains a site's evaluation texts, so the
held-out evaluation stays held out from the base model too.
"""

from __future__ import annotations

from pathlib import Path

DEMO_SITE_IDS: tuple[str, ...] = ("hospital-north", "clinic-south", "lab-east")
SITES_DIRNAME = "demo_sites"
CORPUS_DIRNAME = "corpus"
CORPUS_FILE = "corpus.jsonl"


def packaged_data_root() -> Path:
    """Return the ``tensorguard/data`` directory that ships inside the package."""
    return Path(__file__).resolve().parent.parent / "data"


def demo_sites_root(data_root: Path | None = None) -> Path:
    """Return the directory holding one sub-directory per demo site."""
    return (data_root or packaged_data_root()) / SITES_DIRNAME


def default_corpus_dir(data_root: Path | None = None) -> Path:
    """Return the directory of the shipped tokenizer / base-model corpus."""
    return (data_root or packaged_data_root()) / CORPUS_DIRNAME
