"""Evaluator keys, signed safety evaluations and integration connectors.

Revision ID: 0003_safety_and_connectors
Revises: 0002_fleet_service
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_safety_and_connectors"
down_revision: str | None = "0002_fleet_service"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = sa.String(length=64)
ACTOR = sa.String(length=128)
DIGEST = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create ``evaluators``, ``safety_evaluations`` and ``connectors``."""
    op.create_table(
        "evaluators",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", ACTOR, nullable=False),
        sa.Column("fingerprint", DIGEST, nullable=False),
        sa.Column("public_key", sa.Text(), nullable=False),
        sa.Column("enrolled_at", TIMESTAMP, nullable=False),
        sa.Column("enrolled_by", ACTOR, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluators")),
        sa.UniqueConstraint("name", name=op.f("uq_evaluators_name")),
        sa.UniqueConstraint("fingerprint", name=op.f("uq_evaluators_fingerprint")),
    )
    op.create_table(
        "safety_evaluations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_digest", DIGEST, nullable=False),
        sa.Column("evaluator_pk", sa.Integer(), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("submitted_at", TIMESTAMP, nullable=False),
        sa.Column("submitted_by", ACTOR, nullable=False),
        sa.ForeignKeyConstraint(
            ["evaluator_pk"],
            ["evaluators.id"],
            name=op.f("fk_safety_evaluations_evaluator_pk_evaluators"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_safety_evaluations")),
    )
    op.create_index(
        op.f("ix_safety_evaluations_model_digest"), "safety_evaluations", ["model_digest"]
    )
    op.create_table(
        "connectors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", NAME, nullable=False),
        sa.Column("kind", NAME, nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("sealed_credentials", sa.Text(), nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("created_by", ACTOR, nullable=False),
        sa.Column("last_checked_at", TIMESTAMP, nullable=True),
        sa.Column("last_seen_at", TIMESTAMP, nullable=True),
        sa.Column("last_status", sa.String(length=16), nullable=True),
        sa.Column("last_detail", sa.Text(), nullable=True),
        sa.Column("healthy", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connectors")),
        sa.UniqueConstraint("name", name=op.f("uq_connectors_name")),
    )


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("connectors")
    op.drop_index(op.f("ix_safety_evaluations_model_digest"), table_name="safety_evaluations")
    op.drop_table("safety_evaluations")
    op.drop_table("evaluators")
