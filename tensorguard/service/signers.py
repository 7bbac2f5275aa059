"""Trust lists of composite signing keys that operators enrol (evaluators, approvers).

Safety evaluators and deployment approvers are enrolled the same way: an operator gives
a name and a base64 composite ML-DSA-65 + Ed25519 public key; the key is stored once
(neither the name nor the key may already be enrolled, and enrolment never replaces a
key) and the enrolment is audited. A submission is then accepted only from the enrolled
key it names, by the token subject that key is enrolled for. :class:`SignerTrustList`
holds what differs between the two lists (table, role word, error types, messages).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tensorguard.crypto import CompositeVerifyKey, CryptoError
from tensorguard.errors import TensorGuardError
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.models import ApproverKey, EvaluatorKey, record_audit, utc_now
from tensorguard.service.errors import PermissionDeniedError


@dataclass(frozen=True)
class EnrolledSignerView:
    """An enrolled signer: its name, key fingerprint and who enrolled it."""

    name: str
    fingerprint: str
    enrolled_at: datetime
    enrolled_by: str


KeyRow = TypeVar("KeyRow", EvaluatorKey, ApproverKey)
View = TypeVar("View", bound=EnrolledSignerView)


@dataclass(frozen=True)
class SignerTrustList(Generic[KeyRow, View]):
    """One trust list of enrolled signer keys and how its errors read.

    ``untrusted_message`` is formatted with ``fingerprint`` (its first 16 characters);
    ``impostor_message`` with ``submitter`` (the token subject) and ``claimed`` (the
    signer the submitted document names).
    """

    role: str  # "evaluator" or "approver": audit action, subject prefix, messages
    table: type[KeyRow]
    view: type[View]  # the API's name for an enrolled signer of this list
    malformed_key_error: type[TensorGuardError]
    already_enrolled_error: type[TensorGuardError]
    untrusted_error: type[TensorGuardError]
    untrusted_message: str
    impostor_message: str

    def decode_key(self, public_key: str) -> CompositeVerifyKey:
        """The composite key from its base64; raise ``malformed_key_error`` otherwise."""
        try:
            return CompositeVerifyKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        except (CryptoError, ValueError) as exc:
            raise self.malformed_key_error(
                f"the {self.role} public key is not a base64 composite ML-DSA-65+Ed25519 key: {exc}"
            ) from None

    def enrol(self, database: FleetDatabase, name: str, public_key: str, *, actor: str) -> View:
        """Trust ``public_key`` for signer ``name``; a name or key is enrolled once."""
        key = self.decode_key(public_key)
        fingerprint = key.fingerprint()
        table = self.table
        with database.session() as session:
            existing = session.scalars(
                select(table).where(or_(table.name == name, table.fingerprint == fingerprint))
            ).first()
            if existing is not None:
                raise self.already_enrolled_error(
                    f"{self.role} {name!r} or its key is already enrolled; enrolment never "
                    "replaces a key"
                )
            row = table(
                name=name,
                fingerprint=fingerprint,
                public_key=base64.b64encode(key.public_bytes()).decode("ascii"),
                enrolled_at=utc_now(),
                enrolled_by=actor,
            )
            session.add(row)
            record_audit(
                session,
                actor,
                f"{self.role}.enrolled",
                f"{self.role}:{name}",
                {"fingerprint": fingerprint},
            )
            return self.view(name, fingerprint, row.enrolled_at, actor)

    def submitter_key(
        self, session: Session, fingerprint: str, *, submitter: str, claimed: str
    ) -> KeyRow:
        """The enrolled key a submission names, once it is ``submitter``'s own.

        Raise ``untrusted_error`` when no key with ``fingerprint`` is enrolled, and
        :class:`PermissionDeniedError` unless both the token subject ``submitter`` and
        the document's ``claimed`` signer are the name the key is enrolled for.
        """
        key_row = session.scalars(
            select(self.table).where(self.table.fingerprint == fingerprint)
        ).first()
        if key_row is None:
            raise self.untrusted_error(self.untrusted_message.format(fingerprint=fingerprint[:16]))
        if submitter != key_row.name or claimed != key_row.name:
            raise PermissionDeniedError(
                self.impostor_message.format(submitter=submitter, claimed=claimed)
            )
        return key_row
