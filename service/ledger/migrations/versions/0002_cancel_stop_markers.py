"""Cancel markers: when a cancel came for a live call, and when Bland accepted its stop.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 09:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add requests.cancel_requested_at, requests.stop_sent_at and the stop sweep's index."""
    with op.batch_alter_table("requests") as batch:
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("stop_sent_at", sa.DateTime(timezone=True)))
    op.create_index("ix_requests_stop", "requests", ["state", "cancel_requested_at"])


def downgrade() -> None:
    """Drop them again."""
    op.drop_index("ix_requests_stop", table_name="requests")
    with op.batch_alter_table("requests") as batch:
        batch.drop_column("stop_sent_at")
        batch.drop_column("cancel_requested_at")
