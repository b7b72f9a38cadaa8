"""Pure conversions: ledger rows to records, transitions to their events and outbox rows."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from schemas.envelope import DialerOptions
from schemas.events import EVENT_TYPES, CallCanceled, CallCompleted, CallFailed, Event
from service.ledger.records import Claim, OutboxRow, Outcome
from service.ledger.states import State

CHUNK = 500  # ids per IN (...) list: well under SQLite's and asyncpg's parameter limits


def to_json(value: Any) -> str:
    """Compact JSON text for a JSON column."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def event_ids(row: Any, now: datetime, **extra: Any) -> dict[str, Any]:
    """The fields every event of a request carries: its ids known so far."""
    values: dict[str, Any] = {
        "request_id": row.request_id,
        "correlation_id": row.correlation_id,
        "call_id": row.call_id,
        "phone_number": row.phone_number,
        "batch_request_id": row.batch_request_id,
        "recipient_index": getattr(row, "recipient_index", None),
        "occurred_at": now,
    }
    values.update(extra)
    return values


def outbox_values(
    ev: Event, *, correlation_id: str | None, reply_to: str | None, now: datetime
) -> dict[str, Any]:
    """The outbox row of an event, answered to `reply_to` with `correlation_id`."""
    return {
        "event_id": ev.event_id,
        "event_type": ev.event_type,
        "request_id": ev.request_id,
        "correlation_id": correlation_id,
        "reply_to": reply_to,
        "body": ev.model_dump_json(),
        "created_at": now,
    }


def reannounce(row: Any, now: datetime) -> Event | None:
    """The current state's event again, as a new event marked duplicate."""
    if row.last_event_type is None or row.last_event is None:
        return None
    previous = EVENT_TYPES[row.last_event_type].model_validate_json(row.last_event)
    return previous.model_copy(
        update={"event_id": str(uuid.uuid4()), "occurred_at": now, "duplicate": True}
    )


def chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    """Slices of at most CHUNK items, for IN (...) lists."""
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def claim_from_row(row: Any, attempt_id: int, now: datetime) -> Claim:
    """The claim of a pending row just taken (its attempt number is the next one)."""
    return Claim(
        request_id=row.request_id,
        attempt_id=attempt_id,
        attempt_no=row.attempts + 1,
        phone_number=row.phone_number,
        body=json.loads(row.body),
        correlation_id=row.correlation_id,
        reply_to=row.reply_to,
        publisher_webhook=row.publisher_webhook,
        started_at=now,
        batch_request_id=row.batch_request_id,
        options=DialerOptions.model_validate_json(row.options or "{}"),
        recipient_index=getattr(row, "recipient_index", None),
        dispatch=getattr(row, "dispatch", None),
    )


def outcome_event(target: State, row: Any, outcome: Outcome, now: datetime) -> Event:
    """The event announcing a call's final state."""
    ids = event_ids(row, now, call_id=outcome.call_id)
    if target is State.COMPLETED:
        return CallCompleted(
            **ids,
            status=outcome.status,
            answered_by=outcome.answered_by,
            call_length_min=outcome.call_length_min,
            duration_s=outcome.duration_s,
            summary=outcome.summary,
            disposition_tag=outcome.disposition_tag,
            recording_url=outcome.recording_url,
            error_message=outcome.error_message,
            price_usd=outcome.price_usd,
            metadata=outcome.metadata,
            source=outcome.source,
        )
    if target is State.FAILED:
        return CallFailed(
            **ids,
            stage="call",
            status=outcome.status,
            error_message=outcome.error_message,
            source=outcome.source,
        )
    requested = row.cancel_requested_at is not None or row.reason == "cancel_requested"
    reason = "requested" if requested else "canceled_at_bland"
    return CallCanceled(**ids, reason=reason)


def outbox_from_row(row: Any) -> OutboxRow:
    """An outbox table row as the relay's record."""
    return OutboxRow(
        id=int(row.id),
        event_id=row.event_id,
        event_type=row.event_type,
        request_id=row.request_id,
        correlation_id=row.correlation_id,
        reply_to=row.reply_to,
        body=row.body,
        created_at=row.created_at,
    )


def outcome_record(outcome: Outcome) -> str:
    """The outcome's fields (not the raw payload: transcripts do not belong in the ledger)."""
    fields = {k: v for k, v in vars(outcome).items() if k != "raw"}
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=False, default=str)
