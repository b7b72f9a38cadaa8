"""The ledger's tables (SQLAlchemy Core), portable across SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# Request ids are at most 128 characters; batch recipients append ":<index>" to theirs.
REQUEST_ID_LEN = 192

# SQLite only turns an INTEGER primary key into an auto-incrementing rowid; PostgreSQL gets BIGINT
# because the outbox of a busy service passes 2**31 rows within a year.
Id = BigInteger().with_variant(Integer(), "sqlite")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC instant; SQLite stores it as naive UTC text that sorts correctly."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes (their zone is a guess) and store UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("the ledger stores timezone-aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        """Give back an aware UTC datetime on every database."""
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"unexpected datetime value from the database: {value!r}")
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


requests = Table(
    "requests",
    metadata,
    Column("request_id", String(REQUEST_ID_LEN), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("state", String(16), nullable=False),
    Column("correlation_id", String(255)),
    Column("reply_to", String(255)),
    Column("phone_number", String(32)),
    Column("body", Text),  # JSON: the Bland body to POST
    Column("options", Text),  # JSON: DialerOptions
    Column("publisher_webhook", Text),
    Column("priority", Integer, nullable=False, server_default="5"),
    # Never null for call rows (accept time when not given) so the claim order is the same on
    # both databases, which sort NULLs differently.
    Column("not_before", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("transient_retries", Integer, nullable=False, server_default="0"),
    Column("call_id", String(128)),
    Column("batch_request_id", String(REQUEST_ID_LEN)),
    Column("reason", String(255)),
    Column("errors", Text),  # JSON list of Bland-style messages
    Column("outcome", Text),  # JSON: what the final webhook or poll said
    Column("last_event_type", String(64)),
    Column("last_event", Text),  # the state's event, re-announced for duplicates
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("attempt_started_at", UTCDateTime),
    Column("outcome_due_at", UTCDateTime),
    Column("next_check_at", UTCDateTime),
    Column("lease_owner", String(128)),
    Column("lease_until", UTCDateTime),
    # A cancel that came while Bland may hold the call; the stop is retried until Bland accepts it.
    Column("cancel_requested_at", UTCDateTime),
    Column("stop_sent_at", UTCDateTime),
    # Weighted fair share across campaigns (service.ledger.fairness): claims take the lowest
    # virtual time first within a priority.
    Column("fair_key", String(REQUEST_ID_LEN + 16)),
    Column("fair_vt", Float, nullable=False, server_default="0"),
    # Batch recipients: the index in their batch request; `bland` when sent in Bland's batches.
    Column("recipient_index", Integer),
    Column("dispatch", String(8)),
    # NULLs are distinct in a unique index on both databases: unique where not null.
    Index("uq_requests_call_id", "call_id", unique=True),
    Index("ix_requests_expiry", "state", "expires_at"),
    Index("ix_requests_check", "state", "next_check_at"),
    Index("ix_requests_started", "state", "attempt_started_at"),
    Index("ix_requests_batch", "batch_request_id"),
    Index("ix_requests_phone", "phone_number", "attempt_started_at"),
    Index("ix_requests_stop", "state", "cancel_requested_at"),
    Index("ix_requests_finished", "state", "updated_at"),
    Index("ix_requests_fair", "state", "priority", "fair_vt"),
    Index("ix_requests_fair_key", "fair_key", "fair_vt"),
)

# The claim's order (priority first, then the fair share's virtual time, then oldest due), so that taking the next due rows reads
# only those rows, however many are pending; the same columns serve "anything due?".
Index(
    "ix_requests_claim",
    requests.c.state,
    requests.c.priority.desc(),
    requests.c.fair_vt,
    requests.c.not_before,
    requests.c.created_at,
    requests.c.request_id,
)

attempts = Table(
    "attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column(
        "request_id",
        String(REQUEST_ID_LEN),
        ForeignKey("requests.request_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt_no", Integer, nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Column("result", String(32)),
    Column("http_status", Integer),
    Column("call_id", String(128)),
    Column("error", Text),
    UniqueConstraint("request_id", "attempt_no"),
    Index("ix_attempts_started_at", "started_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("event_type", String(64), nullable=False),
    Column("request_id", String(REQUEST_ID_LEN), nullable=False),
    Column("correlation_id", String(255)),
    Column("reply_to", String(255)),
    Column("body", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("sent_at", UTCDateTime),
    # Replicas lease the rows they are publishing, so each event is normally published once.
    Column("lease_owner", String(128)),
    Column("lease_until", UTCDateTime),
    Index("ix_outbox_pending", "sent_at", "id"),
)

# A concurrency slot, held from claim until the final outcome, bounded by a lease.
slots = Table(
    "slots",
    metadata,
    Column(
        "request_id",
        String(REQUEST_ID_LEN),
        ForeignKey("requests.request_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("acquired_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=False),
    Index("ix_slots_lease_until", "lease_until"),
)

# One row (id = 1). Claimers lock it (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN
# IMMEDIATE already serialises writers) so that counting free slots and recent attempts and then
# taking them is atomic across replicas. The rate itself is counted from `attempts.started_at`.
admission = Table(
    "admission",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("updated_at", UTCDateTime),
    # Bland's 429 "Rate limit exceeded": every replica pauses until then and slows its pace.
    Column("paused_until", UTCDateTime),
    Column("pace_factor", Float, nullable=False, server_default="1"),
    Column("pace_changed_at", UTCDateTime),
    Column("virtual_time", Float, nullable=False, server_default="0"),
)

# The do-not-call list, checked at dial time (E.164 numbers).
do_not_call = Table(
    "do_not_call",
    metadata,
    Column("phone_number", String(32), primary_key=True),
    Column("reason", String(255)),
    Column("source", String(255)),  # the request id or "cli"
    Column("added_at", UTCDateTime, nullable=False),
)

ADMISSION_ROW_ID = 1

# One row per batch request; its recipients are `requests` rows with its batch_request_id.
batches = Table(
    "batches",
    metadata,
    Column("batch_request_id", String(REQUEST_ID_LEN), primary_key=True),
    Column("state", String(16), nullable=False),  # open, completed
    Column("shape", String(8), nullable=False),  # legacy, v2
    Column("dispatch", String(8), nullable=False),  # expand, bland
    Column("correlation_id", String(255)),
    Column("reply_to", String(255)),
    Column("recipients", Integer, nullable=False),
    Column("rejected", Integer, nullable=False),
    Column("test_mode", Boolean, nullable=False),
    Column("bland_batch_ids", Text),  # JSON list, `bland` dispatch
    Column("cancel_requested_at", UTCDateTime),
    Column("completed_at", UTCDateTime),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_batches_state", "state", "updated_at"),
)
