"""The custodian ledger's records: their strict schema and their unchanged signed bytes."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tensorguard.codec import canonical_json, parse_json_object
from tensorguard.crypto import CompositeSigningKey
from tensorguard.federation._custodian_ledger import (
    CustodianLedger,
    DecryptionRecord,
    LedgerError,
)
from tensorguard.signed_log import GENESIS, PREVIOUS_FIELD, record_digest

# canonical_digest(to_json()) of the two records below, computed with the hand-written
# parser/encoder that preceded the pydantic schema (commit d941935): the hash chain of
# every existing ledger depends on these bytes.
GOLDEN_DIGEST = "5ffbbb927802c797deef23c4daf1e899a491e0f0d9ce859cb3555182c3fa7328"
GOLDEN_NO_DP_DIGEST = "c48c13eaeb3f135dbde332453f03342330bfd5db4cd2705349cecad50f7f0080"
KEY = CompositeSigningKey.generate()


def _record() -> DecryptionRecord:
    return DecryptionRecord(
        round_id="round-0007",
        public_context_sha256="c" * 64,
        contributors=("site-00", "site-01", "site-02"),
        aggregate_sha256="f" * 64,
        decrypted_at=datetime(2026, 12, 3, 8, 42, 21, tzinfo=UTC),
        previous_sha256=GENESIS,
        dp_noise_multiplier=1.1,
    )


def test_record_bytes_are_unchanged_and_round_trip() -> None:
    first = _record()
    second = DecryptionRecord(
        round_id="round-0008",
        public_context_sha256="c" * 64,
        contributors=("site-00",),
        aggregate_sha256="9" * 64,
        decrypted_at=datetime(2026, 12, 3, 9, 0, 0, tzinfo=UTC),
        previous_sha256=first.digest,
    )
    assert first.digest == GOLDEN_DIGEST
    assert second.digest == GOLDEN_NO_DP_DIGEST
    for record in (first, second):
        document = parse_json_object(canonical_json(record.to_json()), what="test")
        assert DecryptionRecord.from_json(document) == record


def test_a_written_ledger_re_reads_to_the_same_signed_records(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = CustodianLedger(path, KEY)
    ledger.authorise(
        round_id="r1",
        public_context_sha256="c" * 64,
        contributors=["site-01", "site-00"],
        aggregate_sha256="a" * 64,
        dp_noise_multiplier=1.5,
    )
    ledger.authorise(
        round_id="r2", public_context_sha256="c" * 64, contributors=["x"], aggregate_sha256="b" * 64
    )
    stored = [parse_json_object(line, what="line")["record"] for line in path.read_bytes().split()]
    records = CustodianLedger(path, KEY).records()
    assert [record.to_json() for record in records] == stored
    assert records[1].previous_sha256 == records[0].digest == record_digest(stored[0])
    assert records[0].contributors == ("site-00", "site-01")


def test_records_written_before_dp_accounting_still_parse() -> None:
    document = _record().to_json()
    del document["dp_noise_multiplier"]
    assert DecryptionRecord.from_json(document).dp_noise_multiplier is None


def _changed(**changes: Any) -> dict[str, Any]:
    return {**_record().to_json(), **changes}


def _without(field: str) -> dict[str, Any]:
    return {key: value for key, value in _record().to_json().items() if key != field}


MALFORMED: list[tuple[str, dict[str, Any], str]] = [
    ("extra field", _changed(note="x"), "note: Extra inputs are not permitted"),
    ("unknown format", _changed(format="v2"), "format: Input should be"),
    ("missing field", _without("aggregate_sha256"), "aggregate_sha256: Field required"),
    ("number for text", _changed(round_id=7), "round_id: Input should be a valid string"),
    ("bool for number", _changed(dp_noise_multiplier=True), "dp_noise_multiplier: Input should"),
    ("zero noise", _changed(dp_noise_multiplier=0), "dp_noise_multiplier: Input should be greater"),
    ("digest not hex", _changed(aggregate_sha256="z" * 64), "aggregate_sha256: String should"),
    ("short previous", _changed(previous_sha256="0"), "previous_sha256: String should match"),
    ("contributors text", _changed(contributors="site-00"), "contributors: Input should be"),
    ("empty contributor", _changed(contributors=[""]), "contributors.0: String should have at"),
    ("naive time", _changed(decrypted_at="2026-12-03T08:42:21"), "decrypted_at: Value error, must"),
]


@pytest.mark.parametrize(
    ("document", "message"), [(d, m) for _, d, m in MALFORMED], ids=[i for i, _, _ in MALFORMED]
)
def test_malformed_records_are_refused_naming_the_field(
    document: dict[str, Any], message: str
) -> None:
    expected = f"a custodian ledger record does not match its schema: {message}"
    with pytest.raises(LedgerError, match=re.escape(expected)):
        DecryptionRecord.from_json(document)


def test_a_signed_record_with_an_unknown_field_stops_the_ledger(tmp_path: Path) -> None:
    """Signed by the custodian's own key (a bug or an older, different build): the chain
    and signature hold, the record still must not be half-read."""
    path = tmp_path / "ledger.jsonl"
    ledger = CustodianLedger(path, KEY)
    fields = {**_record().to_json(), "override": True}
    del fields[PREVIOUS_FIELD]
    ledger._log.append(KEY, fields)
    with pytest.raises(LedgerError, match="override: Extra inputs are not permitted"):
        ledger.records()
