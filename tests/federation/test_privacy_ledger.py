"""A site's stored privacy ledger: its strict schema and its unchanged file format."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pytest

from tensorguard.federation._errors import PrivacyAccountingError
from tensorguard.federation._privacy import PrivacyCharge, PrivacyLedger

# SHA-256 of to_json() for _ledger(), computed with the json.loads/float() parser that
# preceded the pydantic schema (commit d941935): the file a site keeps is unchanged.
GOLDEN_SHA256 = "b43ba1e22704d33e35d45161313d7b8b90f8137c8a0adf2a919b6b26ea4f5dbf"


def _ledger() -> PrivacyLedger:
    charges = [PrivacyCharge("round-0001", 1.1), PrivacyCharge("round-0002", 0.9, 3)]
    return PrivacyLedger("site-03", 1e-5, 8.0, charges)


def test_ledger_text_is_unchanged_and_round_trips() -> None:
    text = _ledger().to_json()
    assert hashlib.sha256(text.encode()).hexdigest() == GOLDEN_SHA256
    restored = PrivacyLedger.from_json(text)
    assert restored == _ledger()
    assert restored.to_json() == text


def _document(**changes: Any) -> dict[str, Any]:
    return {**json.loads(_ledger().to_json()), **changes}


def _charge(**changes: Any) -> dict[str, Any]:
    return _document(charges=[{"round_id": "r", "noise_multiplier": 1.0, "steps": 1, **changes}])


MALFORMED: list[tuple[str, str, str]] = [
    ("extra field", json.dumps(_document(owner="x")), "owner: Extra inputs are not permitted"),
    ("extra in charge", json.dumps(_charge(seed=1)), "charges.0.seed: Extra inputs are not"),
    ("unknown format", json.dumps(_document(format="v0")), "format: Input should be"),
    ("number for site", json.dumps(_document(site_id=3)), "site_id: Input should be a valid"),
    ("text for number", json.dumps(_document(delta="1e-5")), "delta: Input should be a valid"),
    ("delta of 1", json.dumps(_document(delta=1)), "delta: Input should be less than 1"),
    ("zero budget", json.dumps(_document(epsilon_budget=0)), "epsilon_budget: Input should be"),
    ("bool for int", json.dumps(_charge(steps=True)), "charges.0.steps: Input should be a valid"),
    ("zero steps", json.dumps(_charge(steps=0)), "charges.0.steps: Input should be greater"),
    (
        "text for noise",
        json.dumps(_charge(noise_multiplier="NaN")),
        "charges.0.noise_multiplier: Input should be a valid number",
    ),
    ("NaN literal", json.dumps(_charge(noise_multiplier=float("nan"))), "non-finite number NaN"),
    (
        "duplicate key",
        _ledger().to_json().replace('"site_id": "site-03",', '"site_id": "a", "site_id": "b",'),
        "repeats the object key 'site_id'",
    ),
]


@pytest.mark.parametrize(
    ("text", "message"), [(t, m) for _, t, m in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_ledgers_are_refused_naming_the_field(text: str, message: str) -> None:
    with pytest.raises(PrivacyAccountingError, match=re.escape(message)) as caught:
        PrivacyLedger.from_json(text)
    assert "restore it from its backup" in str(caught.value)
