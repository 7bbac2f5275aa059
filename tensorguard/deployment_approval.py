"""Signed deployment approvals: who approved which release for which robot channel.

A deployment of a release to a channel (its promotion from the canary cohort to every
node) needs a person to vouch for it. :func:`sign_approval` signs the RFC 8785 canonical
JSON of a :class:`DeploymentApproval` — fleet, channel, version, the package's SHA-256
and the approver — with the approver's composite ML-DSA-65 + Ed25519 key under the
domain-separated context :data:`SIGNATURE_CONTEXT`, so no other signature by the same
key (a safety evaluation, a package) counts as an approval.

:meth:`SignedDeploymentApproval.verify_for` is called when an approval is stored, on
every read and before a deployment: the key must be trusted and be the key the approval
names, the signature must verify, and the approval must name exactly the release being
deployed (an approval of another version, digest, channel or fleet is refused).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tensorguard.codec import canonical_json
from tensorguard.crypto import CompositeSigner
from tensorguard.errors import TensorGuardError
from tensorguard.fleet.names import NAME_PATTERN
from tensorguard.safety_evaluation import Digest, Label
from tensorguard.signed_statement import StatementKind, sign_statement, verify_signed_statement

APPROVAL_FORMAT: Final = "tensorguard.deployment-approval/v1"
SIGNATURE_CONTEXT: Final = b"tensorguard/deployment-approval/v1"

FleetName = Annotated[str, Field(pattern=NAME_PATTERN.pattern, max_length=64)]


class DeploymentApprovalError(TensorGuardError):
    """A deployment approval is malformed, untrusted, forged or for another release."""


class UntrustedApproverError(DeploymentApprovalError):
    """The approval is signed by a key that is not an enrolled approver key."""


class ApprovalSignatureError(DeploymentApprovalError):
    """The approval's signature or public key is malformed or does not verify."""


class ApprovalMismatchError(DeploymentApprovalError):
    """The approval is genuine but approves another release than the one deployed."""


_APPROVAL_KIND = StatementKind(
    title="deployment approval",
    noun="approval",
    signer_role="approver",
    untrusted_hint="an enrolled approver key; an operator must enrol it first (POST /v1/approvers)",
    signature_error=ApprovalSignatureError,
    untrusted_error=UntrustedApproverError,
    error=DeploymentApprovalError,
    fingerprint_fix="set approver_fingerprint to the key's",
)


class DeploymentApproval(BaseModel):
    """The signed statement: this approver approves this package for this channel."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["tensorguard.deployment-approval/v1"] = APPROVAL_FORMAT
    fleet: FleetName
    channel: FleetName
    version: Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
    release_digest: Digest
    approver: Label
    approver_fingerprint: Digest
    approved_at: Annotated[str, Field(min_length=1, max_length=64)]

    def canonical_bytes(self) -> bytes:
        """The RFC 8785 canonical JSON that is signed."""
        return canonical_json(self.model_dump(mode="json"))


class SignedDeploymentApproval(BaseModel):
    """An approval with the approver's composite public key and signature (base64)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    approval: DeploymentApproval
    public_key: Annotated[str, Field(min_length=1, max_length=4096)]
    signature: Annotated[str, Field(min_length=1, max_length=8192)]

    @classmethod
    def parse(cls, document: object) -> SignedDeploymentApproval:
        """Validate a mapping; raise :class:`DeploymentApprovalError` naming the problem."""
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise DeploymentApprovalError(
                f"deployment approval is malformed ({exc.error_count()} problems)"
            ) from exc

    def verify(self, trusted_fingerprints: Collection[str]) -> DeploymentApproval:
        """Return the approval once its key is trusted and its signature verifies."""
        verify_signed_statement(
            _APPROVAL_KIND,
            payload=self.approval.canonical_bytes(),
            context=SIGNATURE_CONTEXT,
            public_key=self.public_key,
            signature=self.signature,
            named_fingerprint=self.approval.approver_fingerprint,
            signer_label=self.approval.approver,
            trusted_fingerprints=trusted_fingerprints,
        )
        return self.approval

    def verify_for(
        self,
        trusted_fingerprints: Collection[str],
        *,
        fleet: str,
        channel: str,
        version: int,
        release_digest: str,
    ) -> DeploymentApproval:
        """:meth:`verify`, then require that it approves exactly this release."""
        approval = self.verify(trusted_fingerprints)
        expected = (fleet, channel, version, release_digest)
        approved = (approval.fleet, approval.channel, approval.version, approval.release_digest)
        if approved != expected:
            raise ApprovalMismatchError(
                f"the approval is for {approval.fleet}/{approval.channel} v{approval.version} "
                f"({approval.release_digest[:16]}), not for {fleet}/{channel} v{version} "
                f"({release_digest[:16]}); the approver must sign this release"
            )
        return approval


def sign_approval(
    approval: DeploymentApproval, signer: CompositeSigner
) -> SignedDeploymentApproval:
    """Sign ``approval`` with the approver's composite key (which it must name)."""
    public_key, signature = sign_statement(
        _APPROVAL_KIND,
        payload=approval.canonical_bytes(),
        context=SIGNATURE_CONTEXT,
        named_fingerprint=approval.approver_fingerprint,
        signer=signer,
    )
    return SignedDeploymentApproval(approval=approval, public_key=public_key, signature=signature)
