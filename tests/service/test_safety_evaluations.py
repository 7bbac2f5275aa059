"""Signed safety evaluations on the live service: trust list, signatures, verified reads."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import uuid
from typing import Any

import pytest

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.safety_evaluation import SafetyEvaluation, SignedSafetyEvaluation, sign_evaluation
from tensorguard.service.tokens import Role
from tests.gate.test_safety_gate import METRICS
from tests.service.fleet_server import FleetServer


@pytest.fixture(scope="module")
def key() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


def _evaluation(name: str, key: CompositeSigningKey, model_digest: str) -> SafetyEvaluation:
    return SafetyEvaluation(
        model_digest=model_digest,
        suite="pick-place-v2",
        evaluator=name,
        evaluator_fingerprint=key.public_key().fingerprint(),
        evaluated_at="2026-12-02T20:00:00+00:00",
        metrics=METRICS,  # type: ignore[arg-type]
    )


def _enrol(server: FleetServer, name: str, key: CompositeSigningKey) -> None:
    public = base64.b64encode(key.public_key().public_bytes()).decode()
    response = server.post_json(
        "/v1/evaluators", {"name": name, "public_key": public}, token=server.token()
    )
    assert response.status_code == 201, response.text
    assert response.json()["fingerprint"] == key.public_key().fingerprint()


def _submit(server: FleetServer, name: str, document: Any) -> Any:
    token = server.token(Role.EVALUATOR, subject=name)
    return server.post_json("/v1/safety-evaluations", document, token=token)


def _digest() -> str:
    return hashlib.sha256(uuid.uuid4().bytes).hexdigest()


def test_a_signed_evaluation_is_stored_and_verified_on_read(
    fleet_server: FleetServer, key: CompositeSigningKey
) -> None:
    name, model = f"eva-{uuid.uuid4().hex[:8]}", _digest()
    _enrol(fleet_server, name, key)
    signed = sign_evaluation(_evaluation(name, key, model), key)
    response = _submit(fleet_server, name, signed.model_dump(mode="json"))
    assert response.status_code == 201, response.text
    assert response.json()["verified"] is True

    read = fleet_server.get(f"/v1/safety-evaluations/{model}", token=fleet_server.token())
    assert read.status_code == 200, read.text
    [stored] = read.json()
    assert stored["verified"] is True
    # what the service serves re-verifies here with the evaluator's key alone
    again = SignedSafetyEvaluation.parse(stored["signed"])
    assert again.verify({key.public_key().fingerprint()}).metrics.task_success_rate == 0.87
    repeat = fleet_server.post_json(
        "/v1/evaluators",
        {"name": name, "public_key": again.public_key},
        token=fleet_server.token(),
    )
    assert repeat.status_code == 409


def test_bad_signature_untrusted_key_and_impersonation_are_refused(
    fleet_server: FleetServer,
) -> None:
    name = f"eva-{uuid.uuid4().hex[:8]}"
    trusted = CompositeSigningKey.generate()
    _enrol(fleet_server, name, trusted)
    good = sign_evaluation(_evaluation(name, trusted, _digest()), trusted).model_dump(mode="json")

    tampered = {**good, "evaluation": {**good["evaluation"], "suite": "easier-suite"}}
    response = _submit(fleet_server, name, tampered)
    assert response.status_code == 400
    assert "signature does not verify" in response.json()["detail"]

    unknown = CompositeSigningKey.generate()
    stranger = sign_evaluation(_evaluation(name, unknown, _digest()), unknown).model_dump(
        mode="json"
    )
    response = _submit(fleet_server, name, stranger)
    assert response.status_code == 403
    assert "not enrolled" in response.json()["detail"]

    other = f"eva-{uuid.uuid4().hex[:8]}"
    response = _submit(fleet_server, other, good)  # someone else's evaluation
    assert response.status_code == 403
    assert fleet_server.post_json("/v1/safety-evaluations", good).status_code == 401
    wrong_role = fleet_server.post_json(
        "/v1/safety-evaluations", good, token=fleet_server.token(Role.OPERATOR, subject=name)
    )
    assert wrong_role.status_code == 403


def test_an_edited_row_is_refused_on_read(fleet_server: FleetServer) -> None:
    if not fleet_server.settings.database_url.startswith("sqlite:///"):
        pytest.skip("edits the SQLite file directly")
    name, model = f"eva-{uuid.uuid4().hex[:8]}", _digest()
    signer = CompositeSigningKey.generate()
    _enrol(fleet_server, name, signer)
    signed = sign_evaluation(_evaluation(name, signer, model), signer)
    assert _submit(fleet_server, name, signed.model_dump(mode="json")).status_code == 201
    path = fleet_server.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        (document,) = db.execute(
            "SELECT document FROM safety_evaluations WHERE model_digest = ?", (model,)
        ).fetchone()
        db.execute(
            "UPDATE safety_evaluations SET document = ? WHERE model_digest = ?",
            (document.replace('"collision_free_rate":0.995', '"collision_free_rate":1'), model),
        )
    read = fleet_server.get(f"/v1/safety-evaluations/{model}", token=fleet_server.token())
    assert read.status_code == 503
    assert "does not verify" in read.json()["detail"]
