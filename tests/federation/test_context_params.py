"""``federation_params.json``: its strict schema, refusals naming the field, round trip."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tensorguard.federation._context import PARAMS_FILENAME, PublicFederation
from tensorguard.federation._errors import ContextError, FederationParamsError


@pytest.fixture
def written(public: PublicFederation, tmp_path: Path) -> Path:
    public.write(tmp_path)
    return tmp_path


def test_written_parameters_read_back(public: PublicFederation, written: Path) -> None:
    text = (written / PARAMS_FILENAME).read_text()
    read = PublicFederation.read(written)
    assert read.params == public.params
    assert read.digest == public.digest
    read.write(written)
    assert (written / PARAMS_FILENAME).read_text() == text


def _rewrite(directory: Path, change: Any) -> None:
    path = directory / PARAMS_FILENAME
    changed = change(json.loads(path.read_text()))
    path.write_text(changed if isinstance(changed, str) else json.dumps(changed))


MALFORMED: list[tuple[str, Any, str]] = [
    ("extra field", lambda d: {**d, "note": 1}, "note: Extra inputs are not permitted"),
    (
        "missing digest",
        lambda d: {k: v for k, v in d.items() if k != "public_context_sha256"},
        "public_context_sha256: Field required",
    ),
    ("unknown format", lambda d: {**d, "format": "v0"}, "format: Input should be"),
    (
        "digest upper case",
        lambda d: {**d, "public_context_sha256": d["public_context_sha256"].upper()},
        "public_context_sha256: String should match pattern",
    ),
    (
        "bool for int",
        lambda d: {**d, "security_level_bits": True},
        "security_level_bits: Input should be a valid integer",
    ),
    ("params not object", lambda d: {**d, "params": [1]}, "params: Input should be a valid"),
    (
        "params extra",
        lambda d: {**d, "params": {**d["params"], "seed": 1}},
        "params.seed: Extra inputs are not permitted",
    ),
    ("top level array", lambda d: [d], "must be a JSON object at the top level"),
    (
        "duplicate key",
        lambda d: json.dumps(d).replace('"format":', '"format": "x", "format":', 1),
        "repeats the object key 'format'",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"), [(c, m) for _, c, m in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_parameter_files_are_refused_naming_the_field(
    written: Path, change: Any, message: str
) -> None:
    _rewrite(written, change)
    with pytest.raises(ContextError, match=re.escape(message)) as caught:
        PublicFederation.read(written)
    assert f"federation parameters {written / PARAMS_FILENAME}" in str(caught.value)
    assert "copy the federation_params.json written by the key ceremony" in str(caught.value)


def test_parameters_below_the_security_level_are_refused(written: Path) -> None:
    weaker = {"coeff_mod_bit_sizes": [60, 60, 60], "min_security_level": 256}
    _rewrite(written, lambda d: {**d, "params": {**d["params"], **weaker}})
    with pytest.raises(FederationParamsError):
        PublicFederation.read(written)
