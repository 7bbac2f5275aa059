"""Deployment approvers and signed approvals; canary rollouts.

Revision ID: 0005_approvals_and_rollouts
Revises: 0004_collector_and_outbox
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_approvals_and_rollouts"
down_revision: str | None = "0004_collector_and_outbox"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = sa.String(length=64)
DIGEST = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``approvers``, ``deployment_approvals`` and ``rollouts``."""
    op.create_table(
        "approvers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("fingerprint", DIGEST, nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("enrolled_at", TIMESTAMP, nullable=False),
        sa.Column("enrolled_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvers")),
        sa.UniqueConstraint("name", name=op.f("uq_approvers_name")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_approvers_fingerprint")),
    )
    op.create_table(
        "deployment_approvals",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", NAME, nullable=False),
        sa.Column("channel", NAME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("release_digest", DIGEST, nullable=False),
        sa.Column("approver_pk", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("submitted_at", TIMESTAMP, nullable=False),
        sa.Column("submitted_by", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(
            ["approver_pk"],
            ["approvers.id"],
            name=op.f("fk_deployment_approvals_approver_pk_approvers"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deployment_approvals")),
        sa.UniqueConstraint(
            "fleet",
            "channel",
            "version",
            "approver_pk",
            name=op.f("uq_deployment_approvals_fleet_channel_version_approver_pk"),
        ),
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", NAME, nullable=False),
        sa.Column("channel", NAME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("previous_version", sa.Integer(), nullable=True),
        sa.Column("canary_nodes", sa.JSON(), nullable=False),
        sa.Column("policy_digest", DIGEST, nullable=False),
        sa.Column("policy", sa.JSON(), nullable=False),
        sa.Column("approval_required", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("decided_at", TIMESTAMP, nullable=True),
        sa.Column("reasons", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rollouts")),
        sa.UniqueConstraint(
            "fleet", "channel", "version", name=op.f("uq_rollouts_fleet_channel_version")
        ),
    )
    op.create_index(op.f("ix_rollouts_status"), "rollouts", ["status"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_index(op.f("ix_rollouts_status"), table_name="rollouts")
    op.drop_table("rollouts")
    op.drop_table("deployment_approvals")
    op.drop_table("approvers")
