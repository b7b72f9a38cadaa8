"""Retention: finished requests are found by state and age without scanning the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Index requests by (state, updated_at) for the retention purge."""
    op.create_index("ix_requests_finished", "requests", ["state", "updated_at"])


def downgrade() -> None:
    """Drop it again."""
    op.drop_index("ix_requests_finished", table_name="requests")
