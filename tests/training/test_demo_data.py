"""The shipped demo data is generated, reproducible and non-IID across sites."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections import Counter
from itertools import combinations
from pathlib import Path

import pytest

from scripts.generate_demo_data import (
    DEMO_SEED,
    EVAL_RECORDS_PER_SITE,
    SITE_DOMAINS,
    TRAIN_RECORDS_PER_SITE,
    render_demo_data,
)
from tensorguard.training.dataset import load_site_dataset
from tensorguard.training.demo_data import (
    DEMO_SITE_IDS,
    default_corpus_dir,
    demo_sites_root,
    packaged_data_root,
)
from tensorguard.training.jsonl import read_texts
from tests.training.conftest import files_of

REPO_ROOT = Path(__file__).resolve().parents[2]
WORD = re.compile(r"[a-z]+")


def _unigrams(texts: tuple[str, ...] | list[str]) -> Counter[str]:
    return Counter(word for text in texts for word in WORD.findall(text.lower()))


def _jensen_shannon_bits(left: Counter[str], right: Counter[str]) -> float:
    left_total, right_total = sum(left.values()), sum(right.values())
    divergence = 0.0
    for word in set(left) | set(right):
        p = left[word] / left_total
        q = right[word] / right_total
        m = (p + q) / 2
        if p:
            divergence += 0.5 * p * math.log2(p / m)
        if q:
            divergence += 0.5 * q * math.log2(q / m)
    return divergence


def test_script_regenerates_the_shipped_files_byte_for_byte(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "scripts/generate_demo_data.py", "--output", str(tmp_path)],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    )
    generated = files_of(tmp_path)
    shipped = files_of(packaged_data_root())
    assert generated.keys() == shipped.keys()
    for relative, content in generated.items():
        assert content == shipped[relative], f"{relative} differs from the generator's output"


def test_check_mode_detects_a_stale_file(tmp_path: Path) -> None:
    script = [sys.executable, "scripts/generate_demo_data.py", "--output", str(tmp_path)]
    subprocess.run(script, cwd=REPO_ROOT, check=True, capture_output=True)
    assert subprocess.run([*script, "--check"], cwd=REPO_ROOT).returncode == 0
    eval_file = tmp_path / "demo_sites" / DEMO_SITE_IDS[0] / "eval.jsonl"
    eval_file.write_bytes(eval_file.read_bytes()[:-10])
    assert subprocess.run([*script, "--check"], cwd=REPO_ROOT).returncode == 1


def test_the_script_generates_the_sites_the_package_names() -> None:
    assert tuple(SITE_DOMAINS) == DEMO_SITE_IDS
    assert sorted(path.name for path in demo_sites_root().iterdir()) == sorted(DEMO_SITE_IDS)


def test_content_follows_the_seed() -> None:
    assert render_demo_data(DEMO_SEED) == render_demo_data(DEMO_SEED)
    other = render_demo_data(DEMO_SEED + 1)
    assert all(other[name] != content for name, content in render_demo_data(DEMO_SEED).items())


@pytest.mark.parametrize("site_id", DEMO_SITE_IDS)
def test_each_site_loads_with_held_out_eval(site_id: str) -> None:
    dataset = load_site_dataset(demo_sites_root() / site_id)
    assert dataset.train_count == TRAIN_RECORDS_PER_SITE
    assert dataset.eval_count == EVAL_RECORDS_PER_SITE
    assert not set(dataset.train_texts) & set(dataset.eval_texts)


def test_corpus_never_contains_a_site_eval_text() -> None:
    corpus = set()
    for path in default_corpus_dir().glob("*.jsonl"):
        corpus.update(read_texts(path))
    assert len(corpus) > 500
    for site_id in DEMO_SITE_IDS:
        eval_texts = set(load_site_dataset(demo_sites_root() / site_id).eval_texts)
        assert not corpus & eval_texts


def test_sites_are_non_iid() -> None:
    """Word distributions differ far more between sites than within one site."""
    datasets = {site: load_site_dataset(demo_sites_root() / site) for site in DEMO_SITE_IDS}
    within = max(
        _jensen_shannon_bits(_unigrams(data.train_texts), _unigrams(data.eval_texts))
        for data in datasets.values()
    )
    between = min(
        _jensen_shannon_bits(_unigrams(a.train_texts), _unigrams(b.train_texts))
        for a, b in combinations(datasets.values(), 2)
    )
    assert between > 0.5
    assert between > 5 * within


def test_records_use_the_documented_schema() -> None:
    for path in packaged_data_root().rglob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            assert set(record) == {"id", "text"}
            assert isinstance(record["id"], str)
            assert record["text"].strip()
