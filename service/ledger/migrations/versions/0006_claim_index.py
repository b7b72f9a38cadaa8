"""Claims: an index in the claim's order, so the cost of a claim does not grow with the backlog.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Replace (state, priority, not_before) by the claim's full order."""
    op.create_index(
        "ix_requests_claim",
        "requests",
        ["state", sa.text("priority DESC"), "fair_vt", "not_before", "created_at", "request_id"],
    )
    op.drop_index("ix_requests_due", table_name="requests")


def downgrade() -> None:
    """Back to the index of revision 0001."""
    op.create_index("ix_requests_due", "requests", ["state", "priority", "not_before"])
    op.drop_index("ix_requests_claim", table_name="requests")
