"""Initial ledger schema: requests, attempts, outbox, slots, admission.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 08:38:01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _id() -> sa.types.TypeEngine[int]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, *, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _create_requests() -> None:
    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(length=192), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("correlation_id", sa.String(length=255), nullable=True),
        sa.Column("reply_to", sa.String(length=255), nullable=True),
        sa.Column("phone_number", sa.String(length=32), nullable=True),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("options", sa.Text(), nullable=True),
        sa.Column("publisher_webhook", sa.Text(), nullable=True),
        sa.Column("priority", sa.Integer(), server_default="5", nullable=False),
        _ts("not_before", nullable=False),
        _ts("expires_at"),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("transient_retries", sa.Integer(), server_default="0", nullable=False),
        sa.Column("call_id", sa.String(length=128), nullable=True),
        sa.Column("batch_request_id", sa.String(length=192), nullable=True),
        sa.Column("reason", sa.String(length=255), nullable=True),
        sa.Column("errors", sa.Text(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("last_event_type", sa.String(length=64), nullable=True),
        sa.Column("last_event", sa.Text(), nullable=True),
        _ts("created_at", nullable=False),
        _ts("updated_at", nullable=False),
        _ts("attempt_started_at"),
        _ts("outcome_due_at"),
        _ts("next_check_at"),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        _ts("lease_until"),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_requests")),
    )
    op.create_index("uq_requests_call_id", "requests", ["call_id"], unique=True)
    op.create_index("ix_requests_due", "requests", ["state", "priority", "not_before"])
    op.create_index("ix_requests_expiry", "requests", ["state", "expires_at"])
    op.create_index("ix_requests_check", "requests", ["state", "next_check_at"])
    op.create_index("ix_requests_started", "requests", ["state", "attempt_started_at"])
    op.create_index("ix_requests_batch", "requests", ["batch_request_id"])
    op.create_index("ix_requests_phone", "requests", ["phone_number", "attempt_started_at"])


def _create_attempts() -> None:
    op.create_table(
        "attempts",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("request_id", sa.String(length=192), nullable=False),
        sa.Column("attempt_no", sa.Integer(), nullable=False),
        _ts("started_at", nullable=False),
        _ts("finished_at"),
        sa.Column("result", sa.String(length=32), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("call_id", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.request_id"],
            name=op.f("fk_attempts_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint(
            "request_id", "attempt_no", name=op.f("uq_attempts_request_id_attempt_no")
        ),
    )
    op.create_index("ix_attempts_started_at", "attempts", ["started_at"])


def _create_outbox() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", _id(), autoincrement=True, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=192), nullable=False),
        sa.Column("correlation_id", sa.String(length=255), nullable=True),
        sa.Column("reply_to", sa.String(length=255), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        _ts("created_at", nullable=False),
        _ts("sent_at"),
        sa.Column("lease_owner", sa.String(length=128), nullable=True),
        _ts("lease_until"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_outbox_event_id")),
    )
    op.create_index("ix_outbox_pending", "outbox", ["sent_at", "id"])


def _create_limits() -> None:
    op.create_table(
        "slots",
        sa.Column("request_id", sa.String(length=192), nullable=False),
        _ts("acquired_at", nullable=False),
        _ts("lease_until", nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.request_id"],
            name=op.f("fk_slots_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_slots")),
    )
    op.create_index("ix_slots_lease_until", "slots", ["lease_until"])
    admission = op.create_table(
        "admission",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_admission")),
    )
    # The one row claimers lock (service.ledger.tables.ADMISSION_ROW_ID).
    op.bulk_insert(admission, [{"id": 1}])


def upgrade() -> None:
    """Create every table of the ledger."""
    _create_requests()
    _create_attempts()
    _create_outbox()
    _create_limits()


def downgrade() -> None:
    """Drop every table of the ledger."""
    for table in ("admission", "slots", "outbox", "attempts", "requests"):
        op.drop_table(table)
