"""Limits and compliance: do-not-call list, shared 429 pause and pace, fair share across campaigns.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """The do_not_call table; pause and pace columns on the admission row."""
    op.create_table(
        "do_not_call",
        sa.Column("phone_number", sa.String(32), nullable=False),
        sa.Column("reason", sa.String(255)),
        sa.Column("source", sa.String(255)),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("phone_number", name="pk_do_not_call"),
    )
    with op.batch_alter_table("admission") as batch:
        batch.add_column(sa.Column("paused_until", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("pace_factor", sa.Float(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("pace_changed_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("virtual_time", sa.Float(), nullable=False, server_default="0"))
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("fair_key", sa.String(208)))
        batch.add_column(sa.Column("fair_vt", sa.Float(), nullable=False, server_default="0"))
    op.create_index("ix_requests_fair", "requests", ["state", "priority", "fair_vt"])
    op.create_index("ix_requests_fair_key", "requests", ["fair_key", "fair_vt"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_requests_fair_key", table_name="requests")
    op.drop_index("ix_requests_fair", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("fair_vt")
        batch.drop_column("fair_key")
    with op.batch_alter_table("admission") as batch:
        batch.drop_column("virtual_time")
        batch.drop_column("pace_changed_at")
        batch.drop_column("pace_factor")
        batch.drop_column("paused_until")
    op.drop_table("do_not_call")
