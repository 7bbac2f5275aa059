"""Fleet service tables: node credentials, request nonces, telemetry, revoked tokens.

Revision ID: 0002_fleet_service
Revises: 0001_initial
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_fleet_service"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def _node_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["node_pk"],
        ["edge_nodes.id"],
        name=op.f(f"fk_{table}_node_pk_edge_nodes"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create the four fleet-service tables and their indexes."""
    op.create_table(
        "node_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=False),
        sa.Column("algorithm", sa.String(length=16), nullable=False),
        sa.Column("public_key", sa.String(length=128), nullable=False),
        sa.Column("cohort", NAME, nullable=False),
        sa.Column("enrolled_at", TIMESTAMP, nullable=False),
        _node_fk("node_credentials"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_credentials")),
        sa.UniqueConstraint("node_pk", name=op.f("uq_node_credentials_node_pk")),
    )
    op.create_index(op.f("ix_node_credentials_cohort"), "node_credentials", ["cohort"])
    op.create_table(
        "request_nonces",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=False),
        sa.Column("nonce", NAME, nullable=False),
        sa.Column("seen_at", TIMESTAMP, nullable=False),
        _node_fk("request_nonces"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_request_nonces")),
        sa.UniqueConstraint("node_pk", "nonce", name=op.f("uq_request_nonces_node_pk_nonce")),
    )
    op.create_index(op.f("ix_request_nonces_seen_at"), "request_nonces", ["seen_at"])
    op.create_table(
        "telemetry_samples",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("node_pk", sa.Integer(), nullable=False),
        sa.Column("message_id", NAME, nullable=False),
        sa.Column("sent_at", TIMESTAMP, nullable=False),
        sa.Column("received_at", TIMESTAMP, nullable=False),
        sa.Column("installed_version", sa.Integer(), nullable=True),
        sa.Column("install_outcome", sa.String(length=16), nullable=True),
        sa.Column("inference_latency_ms", sa.Float(), nullable=True),
        sa.Column("error_rate", sa.Float(), nullable=True),
        sa.Column("safety_events", sa.Integer(), nullable=False),
        sa.Column("cpu_percent", sa.Float(), nullable=True),
        sa.Column("memory_mb", sa.Float(), nullable=True),
        _node_fk("telemetry_samples"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_samples")),
        sa.UniqueConstraint(
            "node_pk", "message_id", name=op.f("uq_telemetry_samples_node_pk_message_id")
        ),
    )
    op.create_index(op.f("ix_telemetry_samples_received_at"), "telemetry_samples", ["received_at"])
    op.create_index(
        "ix_telemetry_samples_node_received", "telemetry_samples", ["node_pk", "received_at"]
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("jti", sa.String(length=128), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_at", TIMESTAMP, nullable=False),
        sa.Column("revoked_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_revoked_tokens")),
        sa.UniqueConstraint("jti", name=op.f("uq_revoked_tokens_jti")),
    )
    op.create_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"])


def downgrade() -> None:
    """Drop the fleet-service tables."""
    op.drop_index(op.f("ix_revoked_tokens_expires_at"), table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    op.drop_index("ix_telemetry_samples_node_received", table_name="telemetry_samples")
    op.drop_index(op.f("ix_telemetry_samples_received_at"), table_name="telemetry_samples")
    op.drop_table("telemetry_samples")
    op.drop_index(op.f("ix_request_nonces_seen_at"), table_name="request_nonces")
    op.drop_table("request_nonces")
    op.drop_index(op.f("ix_node_credentials_cohort"), table_name="node_credentials")
    op.drop_table("node_credentials")
