"""Site data loading: digests, counts and clear errors for every schema violation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorguard.digest import sha256_file, sha256_tree
from tensorguard.errors import TensorGuardError
from tensorguard.training.dataset import load_site_dataset, resolve_site_dir
from tensorguard.training.demo_data import DEMO_SITE_IDS, demo_sites_root
from tensorguard.training.errors import DatasetError

GOOD_LINE = '{"text": "a valid record"}\n'


def _site(tmp_path: Path, train: str | bytes = GOOD_LINE, eval_: str | bytes = GOOD_LINE) -> Path:
    site = tmp_path / "site"
    site.mkdir(parents=True)
    for name, content in (("train.jsonl", train), ("eval.jsonl", eval_)):
        data = content.encode() if isinstance(content, str) else content
        (site / name).write_bytes(data)
    return site


def test_demo_site_digests_match_the_files() -> None:
    site_dir = demo_sites_root() / DEMO_SITE_IDS[0]
    dataset = load_site_dataset(site_dir)
    assert dataset.train_sha256 == sha256_file(site_dir / "train.jsonl")
    assert dataset.eval_sha256 == sha256_file(site_dir / "eval.jsonl")
    assert dataset.digest == sha256_tree(site_dir)


def test_digest_changes_when_one_byte_changes(tmp_path: Path) -> None:
    first = load_site_dataset(_site(tmp_path / "a"))
    second = load_site_dataset(_site(tmp_path / "b", eval_='{"text": "a valid recorD"}\n'))
    assert first.train_sha256 == second.train_sha256
    assert first.digest != second.digest


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"text": "ok"}\n{"text": "unterminated\n', r"train\.jsonl:2: malformed JSON"),
        ('{"id": "x"}\n', r'train\.jsonl:1: missing "text"'),
        ('{"text": 42}\n', r'train\.jsonl:1: "text" must be a string'),
        ('{"text": "   "}\n', r'train\.jsonl:1: "text" is empty'),
        ('["a list"]\n', r"train\.jsonl:1: expected a JSON object"),
        ('{"text": "ok", "label": 1}\n', r"train\.jsonl:1: unexpected field\(s\) 'label'"),
        ('{"text": "ok", "id": 7}\n', r'train\.jsonl:1: "id" must be a string'),
        ('{"text": "a", "id": "x"}\n{"text": "b", "id": "x"}\n', r"train\.jsonl:2: id 'x'"),
        ('{"text": "ok"}\n\n{"text": "ok"}\n', r"train\.jsonl:2: blank line"),
        (b'{"text": "caf\xe9"}\n', r"train\.jsonl:1: not valid UTF-8"),
        ("", r"train\.jsonl: file is empty"),
    ],
)
def test_schema_violations_name_file_and_line(
    tmp_path: Path, content: str | bytes, expected: str
) -> None:
    site = _site(tmp_path, train=content)
    with pytest.raises(DatasetError, match=expected) as error:
        load_site_dataset(site)
    assert str(site / "train.jsonl") in str(error.value)
    assert isinstance(error.value, TensorGuardError)


def test_missing_directory_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match="site data directory not found") as error:
        load_site_dataset(missing)
    assert str(missing) in str(error.value)


def test_missing_eval_file_is_named(tmp_path: Path) -> None:
    site = _site(tmp_path)
    (site / "eval.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"eval\.jsonl: file not found"):
        load_site_dataset(site)


def test_unknown_site_lists_known_sites() -> None:
    with pytest.raises(DatasetError, match="unknown site 'atlantis'") as error:
        resolve_site_dir(demo_sites_root(), "atlantis")
    assert all(site in str(error.value) for site in DEMO_SITE_IDS)


@pytest.mark.parametrize("site_id", ["../etc", "a/b", "", "UPPER", "-lead"])
def test_site_ids_cannot_escape_the_root(site_id: str) -> None:
    with pytest.raises(DatasetError, match="invalid site id"):
        resolve_site_dir(demo_sites_root(), site_id)


def test_known_site_resolves() -> None:
    assert resolve_site_dir(demo_sites_root(), DEMO_SITE_IDS[1]) == (
        demo_sites_root() / DEMO_SITE_IDS[1]
    )


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.text(min_size=1).filter(lambda text: bool(text.strip())), min_size=1, max_size=8),
    st.booleans(),
)
def test_any_valid_records_round_trip(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], with_ids: bool
) -> None:
    lines = "".join(
        json.dumps({"text": text, **({"id": f"r{index}"} if with_ids else {})}) + "\n"
        for index, text in enumerate(texts)
    )
    site = _site(tmp_path_factory.mktemp("prop"), train=lines, eval_=lines)
    dataset = load_site_dataset(site)
    assert list(dataset.train_texts) == texts
    assert list(dataset.eval_texts) == texts
