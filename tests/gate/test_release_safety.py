"""The release gate reads the round's signed safety evaluation from the application DB.

``decide_release`` with a policy ``safety`` section looks up the evaluations of the
round's model digest in a real migrated SQLite database (stored by the service's own
``SafetyEvaluationStore``), lets the gate verify the chosen one against the policy's
trusted evaluators, and blocks the release when it is missing, unverified or failing.
"""

from __future__ import annotations

import base64
import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import select

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.fleet.db import FleetDatabase, migrate, sqlite_url
from tensorguard.fleet.models import EvaluatorKey
from tensorguard.gate import GateDecision
from tensorguard.release import (
    ReleaseBlockedError,
    decide_release,
    load_passed_decision,
    require_passed,
)
from tensorguard.safety_evaluation import sign_evaluation
from tensorguard.service.safety import SafetyEvaluationStore
from tests.gate.test_gate import criterion, good_evidence, policy_document
from tests.gate.test_safety_gate import METRICS, MODEL_DIGEST, evaluation, safety_section

EVALUATOR = "eva"


@pytest.fixture
def database(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "app.db")
    migrate(url)
    return url


@pytest.fixture(scope="module")
def key() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


def _policy_file(tmp_path: Path, *trusted: str) -> Path:
    path = tmp_path / "policy.yaml"
    document = policy_document(safety=safety_section(*trusted))
    path.write_text(yaml.safe_dump(document), encoding="utf-8")
    return path


def _store(url: str, key: CompositeSigningKey, name: str = EVALUATOR, **changes: Any) -> None:
    database = FleetDatabase(url)
    try:
        store = SafetyEvaluationStore(database)
        public = base64.b64encode(key.public_key().public_bytes()).decode()
        if not any(e.name == name for e in _evaluators(database)):
            store.enrol_evaluator(name, public, actor="operator:ops")
        signed = sign_evaluation(evaluation(key, evaluator=name, **changes), key)
        store.submit(signed, evaluator=name)
    finally:
        database.close()


def _evaluators(database: FleetDatabase) -> list[Any]:
    with database.session() as session:
        return list(session.scalars(select(EvaluatorKey)).all())


def _decide(tmp_path: Path, url: str, *trusted: str) -> GateDecision:
    return decide_release(
        good_evidence(),
        _policy_file(tmp_path, *trusted),
        model_digest=MODEL_DIGEST,
        database_url=url,
    )


def test_no_evaluation_in_the_database_blocks_the_release(
    tmp_path: Path, database: str, key: CompositeSigningKey
) -> None:
    decision = _decide(tmp_path, database, key.public_key().fingerprint())
    assert not decision.passed
    assert "safety_evaluation is missing" in criterion(decision, "safety_evaluation").reason
    with pytest.raises(ReleaseBlockedError, match="safety_evaluation"):
        require_passed(decision)
    # an evaluation of another model does not count for this one
    _store(database, key, model_digest=hashlib.sha256(b"another model").hexdigest())
    assert not _decide(tmp_path, database, key.public_key().fingerprint()).passed


def test_a_passing_verified_evaluation_releases(
    tmp_path: Path, database: str, key: CompositeSigningKey
) -> None:
    _store(database, key)
    decision = _decide(tmp_path, database, key.public_key().fingerprint())
    assert decision.passed, decision.failures
    assert criterion(decision, "safety_evaluation").status == "passed"
    assert decision.evidence.model_digest == MODEL_DIGEST
    # per-metric rows, each with the observed value and the policy threshold
    latency = criterion(decision, "safety_estop_latency_ms")
    assert (latency.observed, latency.threshold, latency.status) == (42.0, 100.0, "passed")
    assert criterion(decision, "safety_collision_free_rate").observed == 0.995
    # the recorded decision re-verifies the signature when the release step reads it
    path = tmp_path / "gate_decision.json"
    path.write_bytes(decision.canonical_json())
    assert load_passed_decision(path) == decision


def test_a_tampered_row_is_refused_by_the_gate(
    tmp_path: Path, database: str, key: CompositeSigningKey
) -> None:
    _store(database, key)
    with sqlite3.connect(database.removeprefix("sqlite:///")) as connection:
        connection.execute(
            "UPDATE safety_evaluations SET document = replace(document, "
            "'\"collision_free_rate\":0.995', '\"collision_free_rate\":1')"
        )
    decision = _decide(tmp_path, database, key.public_key().fingerprint())
    assert not decision.passed
    assert "signature does not verify" in criterion(decision, "safety_evaluation").reason


def test_an_evaluator_the_policy_does_not_trust_is_refused(
    tmp_path: Path, database: str, key: CompositeSigningKey
) -> None:
    _store(database, key)  # enrolled with the service, but not in this policy
    other = CompositeSigningKey.generate().public_key().fingerprint()
    decision = _decide(tmp_path, database, other)
    assert not decision.passed
    assert "not a trusted evaluator key" in criterion(decision, "safety_evaluation").reason


def test_failing_metrics_block_with_per_metric_rows_and_a_passing_one_is_chosen(
    tmp_path: Path, database: str, key: CompositeSigningKey
) -> None:
    fingerprint = key.public_key().fingerprint()
    _store(database, key, metrics=METRICS | {"estop_latency_ms": 150.0})
    decision = _decide(tmp_path, database, fingerprint)
    assert not decision.passed
    latency = criterion(decision, "safety_estop_latency_ms")
    assert (latency.status, latency.observed, latency.blocking) == ("failed", 150.0, False)
    assert criterion(decision, "safety_episodes").status == "passed"
    assert "estop_latency_ms 150 exceeds" in criterion(decision, "safety_evaluation").reason
    # a passing evaluation is the one the gate judges, stored before or after a failing one
    _store(database, key)
    assert _decide(tmp_path, database, fingerprint).passed
    _store(database, key, metrics=METRICS | {"task_success_rate": 0.1})
    assert _decide(tmp_path, database, fingerprint).passed


def test_without_a_safety_section_the_database_is_not_read(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(yaml.safe_dump(policy_document()), encoding="utf-8")
    decision = decide_release(
        good_evidence(),
        path,
        model_digest=MODEL_DIGEST,
        database_url=sqlite_url(tmp_path / "absent" / "never.db"),
    )
    assert decision.passed
    assert decision.evidence == good_evidence()
