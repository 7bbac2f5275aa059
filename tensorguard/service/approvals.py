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

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from tensorguard.codec import CodecError, parse_canonical_json
from tensorguard.deployment_approval import (
    ApprovalSignatureError,
    DeploymentApprovalError,
    SignedDeploymentApproval,
    UntrustedApproverError,
)
from tensorguard.fleet.db import FleetDatabase
from tensorguard.fleet.models import (
    ApproverKey,
    DeploymentApprovalRow,
    ReleaseRow,
    of_release,
    record_audit,
    utc_now,
)
from tensorguard.service.errors import (
    ApprovalIntegrityError,
    ApproverAlreadyEnrolledError,
    MissingApprovalError,
    UnknownPackageError,
)
from tensorguard.service.signers import EnrolledSignerView, SignerTrustList


@dataclass(frozen=True)
class ApproverView(EnrolledSignerView):
    """An enrolled approver: its name, key fingerprint and who enrolled it."""


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


APPROVERS: SignerTrustList[ApproverKey, ApproverView] = SignerTrustList(
    role="approver",
    table=ApproverKey,
    view=ApproverView,
    malformed_key_error=ApprovalSignatureError,
    already_enrolled_error=ApproverAlreadyEnrolledError,
    untrusted_error=UntrustedApproverError,
    untrusted_message="approver key {fingerprint} is not enrolled; an operator must enrol it "
    "(POST /v1/approvers) first",
    impostor_message="{submitter!r} may submit only approvals signed with its own enrolled "
    "approver key and naming itself (this one names {claimed!r})",
)
"""The approver trust list (table ``approvers``)."""


class ApprovalStore:
    """The approver trust list and the signed deployment approvals."""

    def __init__(self, database: FleetDatabase) -> None:
        """Use ``database`` (migrated to the shipped head)."""
        self.database = database

    def enrol_approver(self, name: str, public_key: str, *, actor: str) -> ApproverView:
        """Trust ``public_key`` for approver ``name``; a name or key is enrolled once."""
        return APPROVERS.enrol(self.database, name, public_key, actor=actor)

    def submit(self, signed: SignedDeploymentApproval, *, approver: str) -> DeploymentApprovalView:
        """Verify and store an approval submitted by ``approver`` (the token's subject)."""
        claimed = signed.approval
        with self.database.session() as session:
            key_row = APPROVERS.submitter_key(
                session, claimed.approver_fingerprint, submitter=approver, claimed=claimed.approver
            )
            release = session.scalars(
                select(ReleaseRow).where(
                    of_release(ReleaseRow, claimed.fleet, claimed.channel, claimed.version)
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
            record_audit(
                session,
                row.submitted_by,
                "deployment.approved",
                f"release:{release.fleet}/{release.channel}/{release.version}",
                {"digest": release.digest, "fingerprint": key_row.fingerprint},
            )
            session.flush()
            return _verified(row, key_row)

    def for_release(self, fleet: str, channel: str, version: int) -> list[DeploymentApprovalView]:
        """Every approval of the release, each verified now against the recorded release."""
        with self.database.session() as session:
            release = session.scalars(
                select(ReleaseRow).where(of_release(ReleaseRow, fleet, channel, version))
            ).first()
            if release is None:
                raise UnknownPackageError(f"no release {fleet}/{channel} v{version} is recorded")
            rows = session.execute(
                select(DeploymentApprovalRow, ApproverKey)
                .join(ApproverKey, ApproverKey.id == DeploymentApprovalRow.approver_pk)
                .where(of_release(DeploymentApprovalRow, fleet, channel, version))
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
