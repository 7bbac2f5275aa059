"""Approver keys and signed deployment approvals in the application database.

Operators enrol approvers (name and composite ML-DSA-65 + Ed25519 public key); that
table is the trust list. An operator whose token subject is an enrolled approver submits
a :class:`SignedDeploymentApproval` of a release recorded in ``releases``: it is stored
only when the approver names itself, the signature verifies and it approves exactly
that release (fleet, channel, version and package digest). Every read verifies each
stored approval again (an edited row is refused, never served), and
:meth:`ApprovalStore.require_approval` is what a deployment calls before it goes ahead.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select

from tensorguard.codec import CodecError, parse_canonical_json
from tensorguard.crypto import CompositeVerifyKey, CryptoError
from tensorguard.deployment_approval import (
    ApprovalSignatureError,
    DeploymentApprovalError,
    SignedDeploymentApproval,
    UntrustedApproverError,
)
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.models import (
    ApproverKey,
    AuditEvent,
    DeploymentApprovalRow,
    ReleaseRow,
    utc_now,
)
from tensorguard.service.errors import (
    ApprovalIntegrityError,
    ApproverAlreadyEnrolledError,
    MissingApprovalError,
    PermissionDeniedError,
    UnknownPackageError,
)


@dataclass(frozen=True)
class ApproverView:
    """An enrolled approver: its name, key fingerprint and who enrolled it."""

    name: str
    fingerprint: str
    enrolled_at: datetime
    enrolled_by: str


@dataclass(frozen=True)
class DeploymentApprovalView:
    """A stored approval, verified just now, with the signed document to re-verify."""

    id: int
    fleet: str
    channel: str
    version: int
    release_digest: str
    approver: str
    submitted_at: datetime
    verified: bool
    signed: SignedDeploymentApproval


class ApprovalStore:
    """The approver trust list and the signed deployment approvals."""

    def __init__(self, database: FleetDatabase) -> None:
        """Use ``database`` (migrated to the shipped head)."""
        self.database = database

    def enrol_approver(self, name: str, public_key: str, *, actor: str) -> ApproverView:
        """Trust ``public_key`` for approver ``name``; a name or key is enrolled once."""
        try:
            key = CompositeVerifyKey.from_public_bytes(base64.b64decode(public_key, validate=True))
        except (CryptoError, ValueError) as exc:
            raise ApprovalSignatureError(
                f"the approver public key is not a base64 composite ML-DSA-65+Ed25519 key: {exc}"
            ) from None
        with self.database.session() as session:
            existing = session.scalars(
                select(ApproverKey).where(
                    or_(ApproverKey.name == name, ApproverKey.fingerprint == key.fingerprint())
                )
            ).first()
            if existing is not None:
                raise ApproverAlreadyEnrolledError(
                    f"approver {name!r} or its key is already enrolled; enrolment never "
                    "replaces a key"
                )
            row = ApproverKey(
                name=name,
                fingerprint=key.fingerprint(),
                public_key=base64.b64encode(key.public_bytes()).decode("ascii"),
                enrolled_at=utc_now(),
                enrolled_by=actor,
            )
            session.add(row)
            session.add(
                AuditEvent(
                    actor=actor,
                    action="approver.enrolled",
                    subject=f"approver:{name}",
                    details={"fingerprint": row.fingerprint},
                )
            )
            return ApproverView(name, row.fingerprint, row.enrolled_at, actor)

    def submit(self, signed: SignedDeploymentApproval, *, approver: str) -> DeploymentApprovalView:
        """Verify and store an approval submitted by ``approver`` (the token's subject)."""
        claimed = signed.approval
        with self.database.session() as session:
            key_row = session.scalars(
                select(ApproverKey).where(ApproverKey.fingerprint == claimed.approver_fingerprint)
            ).first()
            if key_row is None:
                raise UntrustedApproverError(
                    f"approver key {claimed.approver_fingerprint[:16]} is not enrolled; an "
                    "operator must enrol it (POST /v1/approvers) first"
                )
            if approver != key_row.name or claimed.approver != key_row.name:
                raise PermissionDeniedError(
                    f"{approver!r} may submit only approvals signed with its own enrolled "
                    f"approver key and naming itself (this one names {claimed.approver!r})"
                )
            release = session.scalars(
                select(ReleaseRow).where(
                    ReleaseRow.fleet == claimed.fleet,
                    ReleaseRow.channel == claimed.channel,
                    ReleaseRow.version == claimed.version,
                )
            ).first()
            if release is None:
                raise UnknownPackageError(
                    f"no release {claimed.fleet}/{claimed.channel} v{claimed.version} is "
                    "recorded; approve a published release"
                )
            signed.verify_for(
                {key_row.fingerprint},
                fleet=release.fleet,
                channel=release.channel,
                version=release.version,
                release_digest=release.digest,
            )
            row = DeploymentApprovalRow(
                fleet=release.fleet,
                channel=release.channel,
                version=release.version,
                release_digest=release.digest,
                approver_pk=key_row.id,
                document=claimed.canonical_bytes().decode("utf-8"),
                signature=signed.signature,
                submitted_at=utc_now(),
                submitted_by=f"approver:{approver}",
            )
            session.add(row)
            session.add(
                AuditEvent(
                    actor=row.submitted_by,
                    action="deployment.approved",
                    subject=f"release:{release.fleet}/{release.channel}/{release.version}",
                    details={"digest": release.digest, "fingerprint": key_row.fingerprint},
                )
            )
            session.flush()
            return _verified(row, key_row)

    def for_release(self, fleet: str, channel: str, version: int) -> list[DeploymentApprovalView]:
        """Every approval of the release, each verified now against the recorded release."""
        with self.database.session() as session:
            release = session.scalars(
                select(ReleaseRow).where(
                    ReleaseRow.fleet == fleet,
                    ReleaseRow.channel == channel,
                    ReleaseRow.version == version,
                )
            ).first()
            if release is None:
                raise UnknownPackageError(f"no release {fleet}/{channel} v{version} is recorded")
            rows = session.execute(
                select(DeploymentApprovalRow, ApproverKey)
                .join(ApproverKey, ApproverKey.id == DeploymentApprovalRow.approver_pk)
                .where(
                    DeploymentApprovalRow.fleet == fleet,
                    DeploymentApprovalRow.channel == channel,
                    DeploymentApprovalRow.version == version,
                )
                .order_by(DeploymentApprovalRow.id)
            ).all()
            return [_verified(row, key_row, release.digest) for row, key_row in rows]

    def require_approval(self, fleet: str, channel: str, version: int) -> DeploymentApprovalView:
        """The first verified approval of the release; raise :class:`MissingApprovalError`
        when there is none (a stored approval that no longer verifies raises
        :class:`ApprovalIntegrityError`). Called before a deployment goes ahead."""
        approvals = self.for_release(fleet, channel, version)
        if not approvals:
            raise MissingApprovalError(
                f"release {fleet}/{channel} v{version} has no signed deployment approval; an "
                "enrolled approver must sign one (POST /v1/deployments) before it is deployed"
            )
        return approvals[0]


def _verified(
    row: DeploymentApprovalRow, key_row: ApproverKey, release_digest: str | None = None
) -> DeploymentApprovalView:
    try:
        document = parse_canonical_json(row.document.encode(), what=f"approval {row.id}")
        signed = SignedDeploymentApproval.parse(
            {"approval": document, "public_key": key_row.public_key, "signature": row.signature}
        )
        signed.verify_for(
            {key_row.fingerprint},
            fleet=row.fleet,
            channel=row.channel,
            version=row.version,
            release_digest=release_digest or row.release_digest,
        )
    except (CodecError, DeploymentApprovalError) as exc:
        raise ApprovalIntegrityError(
            f"stored deployment approval {row.id} does not verify ({exc}); the database row "
            "was changed: investigate, and have the approver sign again"
        ) from None
    return DeploymentApprovalView(
        id=row.id,
        fleet=row.fleet,
        channel=row.channel,
        version=row.version,
        release_digest=row.release_digest,
        approver=key_row.name,
        submitted_at=row.submitted_at,
        verified=True,
        signed=signed,
    )
