"""tensorguard.signed_log: any removal, reorder, edit or foreign signature is detected."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.errors import TensorGuardError
from tensorguard.signed_log import GENESIS, LogHead, SignedLog

KEY = CompositeSigningKey.generate()
CONTEXT = b"tensorguard/tests/signed-log"


class LogBroken(TensorGuardError):
    """The error the test log raises."""


def _log(path: Path) -> SignedLog:
    return SignedLog(
        path,
        KEY.public_key(),
        context=CONTEXT,
        error=LogBroken,
        name="test log",
        signer="the test key",
        remedy="Restore it.",
    )


def _written(tmp_path: Path, count: int) -> tuple[SignedLog, list[bytes]]:
    log = _log(tmp_path / "log.jsonl")
    for number in range(count):
        log.append(KEY, {"n": number, "what": f"event {number}"})
    return log, log.path.read_bytes().splitlines()


def test_records_chain_from_genesis(tmp_path: Path) -> None:
    log, _ = _written(tmp_path, 3)
    records = log.records()
    assert [r["n"] for r in records] == [0, 1, 2]
    assert records[0]["previous_sha256"] == GENESIS
    assert log.verify() == LogHead(3, log.verify().digest)
    with pytest.raises(ValueError, match="set by the log"):
        log.append(KEY, {"previous_sha256": GENESIS})


MUTATIONS = st.sampled_from(["remove", "swap", "edit", "duplicate"])


@settings(max_examples=25)
@given(mutation=MUTATIONS, index=st.integers(0, 3), offset=st.integers(1, 3))
def test_every_single_mutation_is_detected(mutation: str, index: int, offset: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        _mutate_and_verify(Path(directory), mutation, index, (index + offset) % 4)


def _mutate_and_verify(directory: Path, mutation: str, index: int, other: int) -> None:
    log, lines = _written(directory, 4)
    head = log.verify()
    changed = list(lines)
    if mutation == "remove":
        del changed[index]
    elif mutation == "swap":
        changed[index], changed[other] = changed[other], changed[index]
    elif mutation == "edit":
        entry = json.loads(changed[index])
        entry["record"]["what"] += "!"
        changed[index] = json.dumps(entry).encode()
    else:
        changed.insert(index, changed[index])
    log.path.write_bytes(b"".join(line + b"\n" for line in changed))
    with pytest.raises(LogBroken):
        log.verify(head)


def test_a_foreign_key_and_a_malformed_line_are_refused(tmp_path: Path) -> None:
    log, lines = _written(tmp_path, 2)
    other = CompositeSigningKey.generate()
    with pytest.raises(LogBroken, match="not signed by the test key"):
        SignedLog(
            log.path, other.public_key(), CONTEXT, LogBroken, "test log", "the test key", ""
        ).records()
    log.path.write_bytes(lines[0] + b"\n{not json\n")
    with pytest.raises(LogBroken, match="line 2 is malformed"):
        log.records()
