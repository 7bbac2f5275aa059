"""Idempotent install reports (per-node report digest) and the announcement outbox.

Revision ID: 0004_collector_and_outbox
Revises: 0003_safety_and_connectors
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_collector_and_outbox"
down_revision: str | None = "0003_safety_and_connectors"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NAME = sa.String(length=64)
DIGEST = sa.String(length=64)
TIMESTAMP = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Add ``install_reports.report_digest`` (unique per node) and ``announcement_outbox``."""
    op.add_column("install_reports", sa.Column("report_digest", DIGEST, nullable=True))
    op.create_index(
        "uq_install_reports_node_digest",
        "install_reports",
        ["node_pk", "report_digest"],
        unique=True,
    )
    op.create_table(
        "announcement_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fleet", NAME, nullable=False),
        sa.Column("channel", NAME, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("queued_at", TIMESTAMP, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_attempt_at", TIMESTAMP, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", TIMESTAMP, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_announcement_outbox")),
        sa.UniqueConstraint(
            "fleet",
            "channel",
            "version",
            name=op.f("uq_announcement_outbox_fleet_channel_version"),
        ),
    )
    op.create_index(op.f("ix_announcement_outbox_state"), "announcement_outbox", ["state"])


def downgrade() -> None:
    """Drop the outbox and the report digest."""
    op.drop_index(op.f("ix_announcement_outbox_state"), table_name="announcement_outbox")
    op.drop_table("announcement_outbox")
    op.drop_index("uq_install_reports_node_digest", table_name="install_reports")
    with op.batch_alter_table("install_reports") as batch:
        batch.drop_column("report_digest")
