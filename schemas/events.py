"""Events published on `dialer.events` (routing key = event type), version 1."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1


def _now() -> datetime:
    return datetime.now(UTC)


def _event_id() -> str:
    return str(uuid.uuid4())


class Event(BaseModel):
    """Fields every event carries; consumers dedupe on `event_id` (delivery is at-least-once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    event_type: ClassVar[str] = "event"

    schema_version: Literal[1] = 1
    event_id: str = Field(default_factory=_event_id, description="Unique id; dedupe on it.")
    occurred_at: datetime = Field(
        default_factory=_now, description="When the transition happened (UTC)."
    )
    request_id: str = Field(description="The request's id: its AMQP message_id or a content hash.")
    correlation_id: str | None = Field(None, description="The request's correlation_id, echoed.")
    call_id: str | None = Field(None, description="Bland's call id, once known.")
    batch_id: str | None = Field(None, description="Bland's batch id, once known.")
    batch_request_id: str | None = Field(
        None, description="The batch request this call belongs to."
    )
    recipient_index: int | None = Field(
        None, ge=0, description="The recipient's index in its batch request (from 0)."
    )
    phone_number: str | None = Field(None, description="E.164 number called (business data, full).")
    duplicate: bool = Field(False, description="True when re-announced for a duplicate request.")

    @property
    def type(self) -> str:
        """The routing key and AMQP `type` of this event."""
        return self.event_type


class CallAccepted(Event):
    """The request is durably in the ledger and will be dialed when due."""

    event_type: ClassVar[str] = "call.accepted"
    kind: Literal["call.create"] = "call.create"
    not_before: datetime | None = None
    expires_at: datetime | None = None


class CallRejected(Event):
    """The request was invalid; it will never be dialed."""

    event_type: ClassVar[str] = "call.rejected"
    reason: Literal[
        "invalid_json",
        "invalid_encoding",
        "invalid_content_type",
        "too_large",
        "invalid_request",
        "unsupported_kind",
        "conflict",
        "unreadable_properties",
        "unprocessable",
    ]
    errors: list[str] = Field(description="Bland-style messages, each naming the field.")


class CallQueued(Event):
    """Bland accepted the call and returned its call id."""

    event_type: ClassVar[str] = "call.queued"
    call_id: str
    attempt: int = Field(1, ge=1)
    reconciled: bool = Field(
        False, description="True when found by reconciliation after an unknown outcome."
    )


class CallCompleted(Event):
    """The call ended; `status` and `answered_by` tell how."""

    event_type: ClassVar[str] = "call.completed"
    call_id: str
    status: str | None = Field(None, description="Bland's status: completed, no-answer, busy, ...")
    answered_by: str | None = Field(
        None, description="human, voicemail, unknown, no-answer or null."
    )
    call_length_min: float | None = Field(None, description="Bland's call_length (minutes).")
    duration_s: float | None = Field(None, description="Bland's corrected_duration (seconds).")
    summary: str | None = None
    disposition_tag: str | None = None
    recording_url: str | None = None
    error_message: str | None = None
    price_usd: float | None = None
    metadata: dict[str, Any] | None = None
    source: Literal["webhook", "poll"] = "webhook"


class CallFailed(Event):
    """The call could not be placed (Bland refused it) or failed on the line."""

    event_type: ClassVar[str] = "call.failed"
    stage: Literal["dial", "call"] = Field(
        description="dial: Bland refused the request; call: the call failed."
    )
    status: str | None = None
    http_status: int | None = None
    error_message: str | None = None
    errors: list[str] = Field(default_factory=list)
    source: Literal["dispatcher", "webhook", "poll"] = "dispatcher"


class CallCanceled(Event):
    """The request was canceled before (or while) being dialed."""

    event_type: ClassVar[str] = "call.canceled"
    reason: str = "requested"


class CallSuppressed(Event):
    """Compliance blocked the call (do-not-call, frequency cap, calling window, ...)."""

    event_type: ClassVar[str] = "call.suppressed"
    reason: str
    rule: str | None = None


class CallDeferred(Event):
    """The recipient's calling window is closed: the request waits in the ledger until then."""

    event_type: ClassVar[str] = "call.deferred"
    not_before: datetime = Field(description="The next instant the window is open (UTC).")
    reason: str = Field("calling_window", description="Why it waits: calling_window.")
    rule: str | None = Field(
        None, description="The rules that applied, e.g. global+US-FL 08:00-20:00."
    )


class DncUpdated(Event):
    """A `dnc.add` / `dnc.remove` request was applied to the do-not-call list."""

    event_type: ClassVar[str] = "dnc.updated"
    action: Literal["add", "remove"]
    listed: bool = Field(description="Whether the number is on the list now.")
    changed: bool = Field(description="False when the list already said so.")
    reason: str | None = None


class CallExpired(Event):
    """The request's `expires_at` passed before it could be dialed."""

    event_type: ClassVar[str] = "call.expired"
    expires_at: datetime


class CallUnresolved(Event):
    """A dial attempt's outcome could not be established; the request is never redialed."""

    event_type: ClassVar[str] = "call.unresolved"
    attempt_started_at: datetime
    reason: str


class BatchAccepted(Event):
    """A batch request is in the ledger, one row per recipient."""

    event_type: ClassVar[str] = "batch.accepted"
    recipients: int = Field(ge=0, description="Recipients taken (test_mode: the first only).")
    rejected: int = Field(0, ge=0, description="Of which rejected (a call.rejected each).")
    dispatch: Literal["expand", "bland"] = Field(
        "expand", description="expand: one POST /v1/calls each; bland: Bland's batches."
    )
    test_mode: bool = False


class BatchRejected(Event):
    """A batch request was invalid as a whole."""

    event_type: ClassVar[str] = "batch.rejected"
    reason: str
    errors: list[str]


class BatchQueued(Event):
    """Bland accepted a batch request holding some of the recipients (`bland` dispatch)."""

    event_type: ClassVar[str] = "batch.queued"
    batch_id: str
    recipients: int = Field(0, ge=0, description="Recipients in this Bland batch.")


class BatchCompleted(Event):
    """Every recipient of the batch has its outcome."""

    event_type: ClassVar[str] = "batch.completed"
    calls_total: int = Field(ge=0, description="Every recipient; the sum of the counts below.")
    calls_successful: int = Field(ge=0, description="call.completed (the call took place).")
    calls_failed: int = Field(ge=0, description="call.failed or call.unresolved.")
    calls_rejected: int = Field(0, ge=0, description="call.rejected (invalid recipient).")
    calls_canceled: int = Field(0, ge=0, description="call.canceled (batch.cancel, call.cancel).")
    calls_suppressed: int = Field(0, ge=0, description="call.suppressed (compliance).")
    calls_expired: int = Field(0, ge=0, description="call.expired.")
    canceled: bool = Field(False, description="A batch.cancel was received for the batch.")


class BatchFailed(Event):
    """The batch failed as a whole."""

    event_type: ClassVar[str] = "batch.failed"
    code: str | None = None
    reason: str


EVENT_TYPES: dict[str, type[Event]] = {
    cls.event_type: cls
    for cls in (
        CallAccepted,
        CallRejected,
        CallQueued,
        CallCompleted,
        CallFailed,
        CallCanceled,
        CallSuppressed,
        CallDeferred,
        CallExpired,
        CallUnresolved,
        DncUpdated,
        BatchAccepted,
        BatchRejected,
        BatchQueued,
        BatchCompleted,
        BatchFailed,
    )
}


def parse_event(event_type: str, body: bytes | str) -> Event:
    """Decode an event body given its AMQP `type` (or routing key)."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise ValueError(f"unknown event type: {event_type}")
    return TypeAdapter(cls).validate_json(body)
