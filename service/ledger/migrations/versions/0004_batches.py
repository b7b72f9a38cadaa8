"""Batches: one row per batch request; each recipient's row knows its index and dispatch mode.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the batches table and requests.recipient_index, requests.dispatch."""
    op.create_table(
        "batches",
        sa.Column("batch_request_id", sa.String(length=192), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("shape", sa.String(length=8), nullable=False),
        sa.Column("dispatch", sa.String(length=8), nullable=False),
        sa.Column("correlation_id", sa.String(length=255), nullable=True),
        sa.Column("reply_to", sa.String(length=255), nullable=True),
        sa.Column("recipients", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("test_mode", sa.Boolean(), nullable=False),
        sa.Column("bland_batch_ids", sa.Text(), nullable=True),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("batch_request_id", name=op.f("pk_batches")),
    )
    op.create_index("ix_batches_state", "batches", ["state", "updated_at"])
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("recipient_index", sa.Integer()))
        batch.add_column(sa.Column("dispatch", sa.String(length=8)))


def downgrade() -> None:
    """Drop them again."""
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("dispatch")
        batch.drop_column("recipient_index")
    op.drop_index("ix_batches_state", table_name="batches")
    op.drop_table("batches")
