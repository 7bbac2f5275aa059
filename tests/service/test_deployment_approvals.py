"""Signed deployment approvals on the live service: enrolment, forgery, other releases,
verified reads and the check a deployment makes before it goes ahead."""

from __future__ import annotations

import base64
import hashlib
import sqlite3
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from tensorguard.crypto._composite import CompositeSigningKey
from tensorguard.deployment_approval import (
    SIGNATURE_CONTEXT,
    ApprovalMismatchError,
    ApprovalSignatureError,
    DeploymentApproval,
    DeploymentApprovalError,
    SignedDeploymentApproval,
    UntrustedApproverError,
    sign_approval,
)
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.registry import ReleaseRecord
from tensorguard.service.approvals import ApprovalStore
from tensorguard.service.errors import ApprovalIntegrityError, MissingApprovalError
from tensorguard.service.tokens import Role
from tests.service.fleet_server import FleetServer

CHANNEL = "arm-cell"


@pytest.fixture
def key() -> CompositeSigningKey:
    return CompositeSigningKey.generate()


def _release(server: FleetServer, version: int = 1) -> tuple[str, str]:
    """Record a release of a fresh fleet in the service's DB; return (fleet, digest)."""
    fleet, digest = f"plant-{uuid.uuid4().hex[:8]}", hashlib.sha256(uuid.uuid4().bytes).hexdigest()
    record = ReleaseRecord(
        channel=CHANNEL,
        version=version,
        digest=digest,
        size=10,
        published_at=datetime.now(UTC),
        path=f"packages/{CHANNEL}/{CHANNEL}-{version}.tgsp",
    )
    database = FleetDatabase(server.settings.database_url)
    try:
        database.record_release(
            fleet, record, "file:///x.tgsp", gate_decision_digest=None, actor="test"
        )
    finally:
        database.close()
    return fleet, digest


def _enrol(server: FleetServer, name: str, key: CompositeSigningKey) -> None:
    public = base64.b64encode(key.public_key().public_bytes()).decode()
    response = server.post_json(
        "/v1/approvers", {"name": name, "public_key": public}, token=server.token()
    )
    assert response.status_code == 201, response.text


def _approval(name: str, key: CompositeSigningKey, fleet: str, digest: str, **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "fleet": fleet,
        "channel": CHANNEL,
        "version": 1,
        "release_digest": digest,
        "approver": name,
        "approver_fingerprint": key.public_key().fingerprint(),
        "approved_at": "2026-12-02T23:00:00+00:00",
    } | changes
    return DeploymentApproval.model_validate(fields)


def _submit(server: FleetServer, name: str, signed: SignedDeploymentApproval) -> Any:
    token = server.token(Role.OPERATOR, subject=name)
    return server.post_json("/v1/deployments", signed.model_dump(mode="json"), token=token)


def _store(server: FleetServer) -> tuple[ApprovalStore, FleetDatabase]:
    database = FleetDatabase(server.settings.database_url)
    return ApprovalStore(database), database


def test_a_signed_approval_is_recorded_verified_and_required(
    fleet_server: FleetServer, key: CompositeSigningKey
) -> None:
    name = f"approver-{uuid.uuid4().hex[:8]}"
    fleet, digest = _release(fleet_server)
    _enrol(fleet_server, name, key)
    store, database = _store(fleet_server)
    try:
        with pytest.raises(MissingApprovalError, match="no signed deployment approval"):
            store.require_approval(fleet, CHANNEL, 1)
        signed = sign_approval(_approval(name, key, fleet, digest), key)
        response = _submit(fleet_server, name, signed)
        assert response.status_code == 201, response.text
        assert response.json()["approver"] == name
        assert response.json()["verified"]
        listed = fleet_server.get(
            f"/v1/deployments/{fleet}/{CHANNEL}/1", token=fleet_server.token()
        )
        assert listed.status_code == 200
        assert [a["approver"] for a in listed.json()] == [name]
        assert store.require_approval(fleet, CHANNEL, 1).approver == name
    finally:
        database.close()


def test_unsigned_forged_and_other_release_approvals_are_refused(
    fleet_server: FleetServer, key: CompositeSigningKey
) -> None:
    name = f"approver-{uuid.uuid4().hex[:8]}"
    fleet, digest = _release(fleet_server)
    _enrol(fleet_server, name, key)
    good = sign_approval(_approval(name, key, fleet, digest), key)
    # unsigned: no signature at all is not even a valid body
    unsigned = good.model_dump(mode="json")
    del unsigned["signature"]
    token = fleet_server.token(Role.OPERATOR, subject=name)
    assert fleet_server.post_json("/v1/deployments", unsigned, token=token).status_code == 422
    # forged: the document edited after signing (another approval time)
    forged = good.model_copy(
        update={"approval": good.approval.model_copy(update={"approved_at": "2027-01-01"})}
    )
    response = _submit(fleet_server, name, forged)
    assert response.status_code == 400
    assert "does not verify" in response.json()["detail"]
    raw = bytearray(base64.b64decode(good.signature))
    raw[-1] ^= 1
    flipped = good.model_copy(update={"signature": base64.b64encode(bytes(raw)).decode()})
    response = _submit(fleet_server, name, flipped)
    assert response.status_code == 400
    assert "does not verify" in response.json()["detail"]
    # a genuine approval of another release's package (same version, other digest)
    other = sign_approval(
        _approval(name, key, fleet, hashlib.sha256(b"other package").hexdigest()), key
    )
    response = _submit(fleet_server, name, other)
    assert response.status_code == 409
    assert "not for" in response.json()["detail"]
    # an approval signed by a key nobody enrolled, and one submitted by someone else
    stranger = CompositeSigningKey.generate()
    assert (
        _submit(
            fleet_server, name, sign_approval(_approval(name, stranger, fleet, digest), stranger)
        ).status_code
        == 403
    )
    assert _submit(fleet_server, "mallory", good).status_code == 403
    # the same key's signature without the approval context is not an approval
    bare = key.sign(good.approval.canonical_bytes())
    response = _submit(
        fleet_server, name, good.model_copy(update={"signature": base64.b64encode(bare).decode()})
    )
    assert response.status_code == 400
    # an evaluator token may not approve deployments
    evaluator = fleet_server.token(Role.EVALUATOR, subject=name)
    body = good.model_dump(mode="json")
    assert fleet_server.post_json("/v1/deployments", body, token=evaluator).status_code == 403
    store, database = _store(fleet_server)
    try:
        with pytest.raises(MissingApprovalError):
            store.require_approval(fleet, CHANNEL, 1)
    finally:
        database.close()


def test_verification_rules_in_the_core(key: CompositeSigningKey) -> None:
    digest = hashlib.sha256(b"pkg").hexdigest()
    signed = sign_approval(_approval("ann", key, "plant-a", digest), key)
    fingerprint = key.public_key().fingerprint()
    release = {"fleet": "plant-a", "channel": CHANNEL, "version": 1, "release_digest": digest}
    assert signed.verify_for({fingerprint}, **release).approver == "ann"
    with pytest.raises(UntrustedApproverError):
        signed.verify_for(set(), **release)
    for field, value in (("version", 2), ("channel", "other"), ("fleet", "plant-b")):
        with pytest.raises(ApprovalMismatchError):
            signed.verify_for({fingerprint}, **(release | {field: value}))
    with pytest.raises(ApprovalMismatchError):
        signed.verify_for({fingerprint}, **(release | {"release_digest": "0" * 64}))
    raw = key.sign(signed.approval.canonical_bytes(), b"tensorguard/safety-evaluation/v1")
    other_context = signed.model_copy(update={"signature": base64.b64encode(raw).decode()})
    with pytest.raises(ApprovalSignatureError):
        other_context.verify({fingerprint})
    assert SIGNATURE_CONTEXT == b"tensorguard/deployment-approval/v1"


def test_an_edited_approval_row_is_refused_on_read(
    fleet_server: FleetServer, key: CompositeSigningKey
) -> None:
    if not fleet_server.settings.database_url.startswith("sqlite"):
        pytest.skip("edits the SQLite file directly")
    name = f"approver-{uuid.uuid4().hex[:8]}"
    fleet, digest = _release(fleet_server)
    _enrol(fleet_server, name, key)
    assert (
        _submit(
            fleet_server, name, sign_approval(_approval(name, key, fleet, digest), key)
        ).status_code
        == 201
    )
    path = fleet_server.settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as connection:
        connection.execute(
            "UPDATE deployment_approvals SET document = replace(document, ?, ?) WHERE fleet = ?",
            ("2026-12-02T23:00:00", "2026-12-02T23:00:01", fleet),
        )
    response = fleet_server.get(f"/v1/deployments/{fleet}/{CHANNEL}/1", token=fleet_server.token())
    assert response.status_code == 503
    assert "does not verify" in response.json()["detail"]
    store, database = _store(fleet_server)
    try:
        with pytest.raises(ApprovalIntegrityError):
            store.require_approval(fleet, CHANNEL, 1)
    finally:
        database.close()


def test_an_approval_is_signed_only_by_the_key_it_names(key: CompositeSigningKey) -> None:
    """Signing with another key than the approval names is refused before any signature."""
    stranger = CompositeSigningKey.generate()
    approval = _approval("ann", key, "plant-1", "0" * 64)
    named, used = key.public_key().fingerprint()[:16], stranger.public_key().fingerprint()[:16]
    with pytest.raises(DeploymentApprovalError) as refused:
        sign_approval(approval, stranger)
    assert str(refused.value) == (
        f"the approval names approver key {named} but is signed with {used}; set "
        "approver_fingerprint to the key's"
    )
    signed = sign_approval(approval, key)
    assert signed.verify({key.public_key().fingerprint()}) == approval
