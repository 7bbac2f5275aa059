"""Initial fleet schema: edge nodes, releases, install reports, audit log.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = sa.String(length=64)
DIGEST = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the four fleet tables and their indexes."""
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("occurred_at", TIMESTAMP, nullable=False),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("action", NAME, nullable=False),
        sa.Column("subject", sa.String(length=256), nullable=False),
        sa.Column("details", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index(op.f("ix_audit_log_occurred_at"), "audit_log", ["occurred_at"])
    op.create_table(
        "edge_nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_id", NAME, nullable=False),
        sa.Column("fleet", NAME, nullable=False),
        sa.Column("channel", NAME, nullable=False),
        sa.Column("recipient_fingerprint", DIGEST, nullable=True),
        sa.Column("registered_at", TIMESTAMP, nullable=False),
        sa.Column("last_seen_at", TIMESTAMP, nullable=True),
        sa.Column("installed_version", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edge_nodes")),
        sa.UniqueConstraint("node_id", name=op.f("uq_edge_nodes_node_id")),
    )
    op.create_table(
        "releases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", NAME, nullable=False),
        sa.Column("channel", NAME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("digest", DIGEST, nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("location", sa.Text(), nullable=False),
        sa.Column("gate_decision_digest", DIGEST, nullable=True),
        sa.Column("published_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_releases")),
        sa.UniqueConstraint(
            "fleet", "channel", "version", name=op.f("uq_releases_fleet_channel_version")
        ),
    )
    op.create_table(
        "install_reports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=True),
        sa.Column("channel", NAME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("reason_code", NAME, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("reported_at", TIMESTAMP, nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["node_pk"],
            ["edge_nodes.id"],
            name=op.f("fk_install_reports_node_pk_edge_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
            name=op.f("fk_install_reports_release_id_releases"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_install_reports")),
    )
    op.create_index(
        "ix_install_reports_node_received", "install_reports", ["node_pk", "received_at"]
    )


def downgrade() -> None:
    """Drop the fleet tables (dependants first)."""
    op.drop_index("ix_install_reports_node_received", table_name="install_reports")
    op.drop_table("install_reports")
    op.drop_table("releases")
    op.drop_table("edge_nodes")
    op.drop_index(op.f("ix_audit_log_occurred_at"), table_name="audit_log")
    op.drop_table("audit_log")
