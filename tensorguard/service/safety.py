"""Evaluator keys and signed safety evaluations in the application database.

Operators enrol evaluators (name and composite ML-DSA-65 + Ed25519 public key); that
table is the trust list. An evaluator submits a :class:`SignedSafetyEvaluation`: it is
accepted only when its key is enrolled, the evaluation names the submitting evaluator
(the token's subject) and the signature verifies; it is stored exactly as signed. Every
read verifies each stored evaluation again against the enrolled key, so an edited row
is refused (:class:`SafetyRecordIntegrityError`), never served.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from tensorguard.codec import CodecError, parse_canonical_json
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.models import EvaluatorKey, SafetyEvaluationRow, record_audit, utc_now
from tensorguard.safety_evaluation import (
    SafetyEvaluationError,
    SafetySignatureError,
    SignedSafetyEvaluation,
    UntrustedEvaluatorError,
)
from tensorguard.service.errors import (
    EvaluatorAlreadyEnrolledError,
    SafetyRecordIntegrityError,
)
from tensorguard.service.signers import EnrolledSignerView, SignerTrustList


@dataclass(frozen=True)
class EvaluatorView(EnrolledSignerView):
    """An enrolled evaluator: its name, key fingerprint and who enrolled it."""


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


EVALUATORS: SignerTrustList[EvaluatorKey, EvaluatorView] = SignerTrustList(
    role="evaluator",
    table=EvaluatorKey,
    view=EvaluatorView,
    malformed_key_error=SafetySignatureError,
    already_enrolled_error=EvaluatorAlreadyEnrolledError,
    untrusted_error=UntrustedEvaluatorError,
    untrusted_message="evaluator key {fingerprint} is not enrolled; an operator must enrol it "
    "(POST /v1/evaluators) before it can submit",
    impostor_message="evaluator {submitter!r} may submit only evaluations signed with its own "
    "enrolled key and naming itself (this one names {claimed!r})",
)
"""The evaluator trust list (table ``evaluators``)."""


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
        return EVALUATORS.enrol(self.database, name, public_key, actor=actor)

    def submit(self, signed: SignedSafetyEvaluation, *, evaluator: str) -> SafetyEvaluationView:
        """Verify and store an evaluation submitted by the evaluator ``evaluator``."""
        claimed = signed.evaluation
        with self.database.session() as session:
            key_row = EVALUATORS.submitter_key(
                session,
                claimed.evaluator_fingerprint,
                submitter=evaluator,
                claimed=claimed.evaluator,
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
            record_audit(
                session,
                row.submitted_by,
                "safety_evaluation.submitted",
                f"model:{evaluation.model_digest}",
                {"suite": evaluation.suite, "fingerprint": key_row.fingerprint},
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
