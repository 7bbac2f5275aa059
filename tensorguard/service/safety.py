"""Evaluator keys and signed safety evaluations in the application database.

Operators enrol evaluators (name and composite ML-DSA-65 + Ed25519 public key); that
table is the trust list. An evaluator submits a :class:`SignedSafetyEvaluation`: it is
accepted only when its key is enrolled, the evaluation names the submitting evaluator
(the token's subject) and the signature verifies; it is stored exactly as signed. Every
read verifies each stored evaluation again against the enrolled key, so an edited row
is refused (:class:`SafetyRecordIntegrityError`), never served.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select

from tensorguard.codec import CodecError, parse_canonical_json
from tensorguard.crypto import CompositeVerifyKey, CryptoError
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.models import AuditEvent, EvaluatorKey, SafetyEvaluationRow, utc_now
from tensorguard.safety_evaluation import (
    SafetyEvaluationError,
    SafetySignatureError,
    SignedSafetyEvaluation,
    UntrustedEvaluatorError,
)
from tensorguard.service.errors import (
    EvaluatorAlreadyEnrolledError,
    PermissionDeniedError,
    SafetyRecordIntegrityError,
)


@dataclass(frozen=True)
class EvaluatorView:
    """An enrolled evaluator: its name, key fingerprint and who enrolled it."""

    name: str
    fingerprint: str
    enrolled_at: datetime
    enrolled_by: str


@dataclass(frozen=True)
class SafetyEvaluationView:
    """A stored evaluation, verified just now, with the signed document to re-verify."""

    id: int
    model_digest: str
    evaluator: str
    submitted_at: datetime
    submitted_by: str
    verified: bool
    signed: SignedSafetyEvaluation


def _decode_key(public_key: str) -> CompositeVerifyKey:
    try:
        return CompositeVerifyKey.from_public_bytes(base64.b64decode(public_key, validate=True))
    except (CryptoError, ValueError) as exc:
        raise SafetySignatureError(
            f"the evaluator public key is not a base64 composite ML-DSA-65+Ed25519 key: {exc}"
        ) from None


def _as_signed(row: SafetyEvaluationRow, key_row: EvaluatorKey) -> SignedSafetyEvaluation:
    """The stored document, signature and enrolled key as a signed evaluation (unverified)."""
    document = parse_canonical_json(row.document.encode(), what=f"safety evaluation {row.id}")
    return SignedSafetyEvaluation.parse(
        {"evaluation": document, "public_key": key_row.public_key, "signature": row.signature}
    )


class SafetyEvaluationStore:
    """The evaluator trust list and the signed evaluations."""

    def __init__(self, database: FleetDatabase) -> None:
        """Use ``database`` (migrated to the shipped head)."""
        self.database = database

    def enrol_evaluator(self, name: str, public_key: str, *, actor: str) -> EvaluatorView:
        """Trust ``public_key`` for evaluator ``name``; a name or key is enrolled once."""
        key = _decode_key(public_key)
        row = EvaluatorKey(
            name=name,
            fingerprint=key.fingerprint(),
            public_key=base64.b64encode(key.public_bytes()).decode("ascii"),
            enrolled_at=utc_now(),
            enrolled_by=actor,
        )
        with self.database.session() as session:
            existing = session.scalars(
                select(EvaluatorKey).where(
                    or_(EvaluatorKey.name == name, EvaluatorKey.fingerprint == row.fingerprint)
                )
            ).first()
            if existing is not None:
                raise EvaluatorAlreadyEnrolledError(
                    f"evaluator {name!r} or its key is already enrolled; enrolment never "
                    "replaces a key"
                )
            session.add(row)
            session.add(
                AuditEvent(
                    actor=actor,
                    action="evaluator.enrolled",
                    subject=f"evaluator:{name}",
                    details={"fingerprint": row.fingerprint},
                )
            )
            return EvaluatorView(name, row.fingerprint, row.enrolled_at, actor)

    def submit(self, signed: SignedSafetyEvaluation, *, evaluator: str) -> SafetyEvaluationView:
        """Verify and store an evaluation submitted by the evaluator ``evaluator``."""
        claimed = signed.evaluation
        with self.database.session() as session:
            key_row = session.scalars(
                select(EvaluatorKey).where(
                    EvaluatorKey.fingerprint == claimed.evaluator_fingerprint
                )
            ).first()
            if key_row is None:
                raise UntrustedEvaluatorError(
                    f"evaluator key {claimed.evaluator_fingerprint[:16]} is not enrolled; an "
                    "operator must enrol it (POST /v1/evaluators) before it can submit"
                )
            if evaluator != key_row.name or claimed.evaluator != key_row.name:
                raise PermissionDeniedError(
                    f"evaluator {evaluator!r} may submit only evaluations signed with its own "
                    f"enrolled key and naming itself (this one names {claimed.evaluator!r})"
                )
            evaluation = signed.verify({key_row.fingerprint})
            row = SafetyEvaluationRow(
                model_digest=evaluation.model_digest,
                evaluator_pk=key_row.id,
                document=evaluation.canonical_bytes().decode("utf-8"),
                signature=signed.signature,
                submitted_at=utc_now(),
                submitted_by=f"evaluator:{evaluator}",
            )
            session.add(row)
            session.add(
                AuditEvent(
                    actor=row.submitted_by,
                    action="safety_evaluation.submitted",
                    subject=f"model:{evaluation.model_digest}",
                    details={"suite": evaluation.suite, "fingerprint": key_row.fingerprint},
                )
            )
            session.flush()
            return self._verified(row, key_row)

    @staticmethod
    def _verified(row: SafetyEvaluationRow, key_row: EvaluatorKey) -> SafetyEvaluationView:
        try:
            signed = _as_signed(row, key_row)
            evaluation = signed.verify({key_row.fingerprint})
        except (CodecError, SafetyEvaluationError) as exc:
            raise SafetyRecordIntegrityError(
                f"stored safety evaluation {row.id} does not verify ({exc}); the database "
                "row was changed: investigate, and have the evaluator submit it again"
            ) from None
        if evaluation.model_digest != row.model_digest:
            raise SafetyRecordIntegrityError(
                f"stored safety evaluation {row.id} is filed under another model digest; "
                "the database row was changed"
            )
        return SafetyEvaluationView(
            id=row.id,
            model_digest=row.model_digest,
            evaluator=key_row.name,
            submitted_at=row.submitted_at,
            submitted_by=row.submitted_by,
            verified=True,
            signed=signed,
        )

    def for_model(self, model_digest: str) -> list[SafetyEvaluationView]:
        """Every evaluation of ``model_digest``, each verified now (oldest first)."""
        with self.database.session() as session:
            rows = session.execute(
                select(SafetyEvaluationRow, EvaluatorKey)
                .join(EvaluatorKey, EvaluatorKey.id == SafetyEvaluationRow.evaluator_pk)
                .where(SafetyEvaluationRow.model_digest == model_digest)
                .order_by(SafetyEvaluationRow.id)
            ).all()
            return [self._verified(row, key_row) for row, key_row in rows]

    def signed_for_model(self, model_digest: str) -> list[SignedSafetyEvaluation]:
        """Every evaluation of ``model_digest`` as signed (newest first), NOT verified.

        For a caller that verifies against its own trust list, e.g. the release gate
        (``GatePolicy.safety.trusted_evaluators``): the signature is checked there, so an
        edited row is refused by the gate's decision, with the reason recorded. A row
        that does not even parse raises :class:`SafetyRecordIntegrityError`.
        """
        with self.database.session() as session:
            rows = session.execute(
                select(SafetyEvaluationRow, EvaluatorKey)
                .join(EvaluatorKey, EvaluatorKey.id == SafetyEvaluationRow.evaluator_pk)
                .where(SafetyEvaluationRow.model_digest == model_digest)
                .order_by(SafetyEvaluationRow.id.desc())
            ).all()
            signed = []
            for row, key_row in rows:
                try:
                    signed.append(_as_signed(row, key_row))
                except (CodecError, SafetyEvaluationError) as exc:
                    raise SafetyRecordIntegrityError(
                        f"stored safety evaluation {row.id} does not parse ({exc}); the "
                        "database row was changed: investigate, and have the evaluator "
                        "submit it again"
                    ) from None
            return signed
