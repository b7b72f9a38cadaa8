"""Events on `dialer.events`: names, required fields, JSON round trips, strictness."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.events import EVENT_TYPES, CallQueued, CallRejected, Event, parse_event

AT = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
REQUIRED: dict[str, dict[str, Any]] = {
    "call.accepted": {},
    "call.rejected": {"reason": "invalid_request", "errors": ["Task must be a string."]},
    "call.queued": {"call_id": "9d404c1b-6a23-4426-953a-a52c392ff8f1"},
    "call.completed": {"call_id": "9d404c1b-6a23-4426-953a-a52c392ff8f1", "status": "completed"},
    "call.failed": {"stage": "dial", "http_status": 400, "errors": ["Invalid from number format"]},
    "call.canceled": {},
    "call.suppressed": {"reason": "do_not_call"},
    "call.expired": {"expires_at": AT},
    "call.deferred": {"not_before": AT, "rule": "global+US-FL 08:00-20:00"},
    "dnc.updated": {"action": "add", "listed": True, "changed": True},
    "call.unresolved": {"attempt_started_at": AT, "reason": "no matching call"},
    "batch.accepted": {"recipients": 3},
    "batch.rejected": {
        "reason": "invalid_request",
        "errors": ["Entry #2 did not have a phone number."],
    },
    "batch.queued": {"batch_id": "8b8e8c57-0d2b-4c43-9d4e-0f6c7a9b1e21"},
    "batch.completed": {"calls_total": 3, "calls_successful": 2, "calls_failed": 1},
    "batch.failed": {"code": "source_invalid", "reason": "Entry #7 did not have a phone number."},
}


def test_every_designed_event_exists_under_its_routing_key() -> None:
    assert set(EVENT_TYPES) == set(REQUIRED)
    for name, cls in EVENT_TYPES.items():
        assert cls.event_type == name
        assert issubclass(cls, Event)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_event_round_trips_through_json(name: str) -> None:
    event = EVENT_TYPES[name](request_id="req-1", correlation_id="corr-1", **REQUIRED[name])
    assert event.type == name
    parsed = parse_event(name, event.model_dump_json())
    assert parsed == event
    assert parsed.schema_version == 1
    assert parsed.occurred_at.tzinfo is not None


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_each_event_needs_a_request_id(name: str) -> None:
    with pytest.raises(ValidationError, match="request_id"):
        EVENT_TYPES[name].model_validate(REQUIRED[name])


def test_event_ids_are_unique_per_event() -> None:
    first, second = (CallQueued(request_id="r", call_id="c") for _ in range(2))
    assert first.event_id != second.event_id


def test_unknown_fields_and_unknown_types_are_refused() -> None:
    body = CallQueued(request_id="r", call_id="c").model_dump_json()
    with pytest.raises(ValueError, match=r"unknown event type: call\.teleported"):
        parse_event("call.teleported", body)
    with pytest.raises(ValidationError, match="Extra inputs"):
        parse_event("call.queued", body[:-1] + ', "colour": "red"}')


def test_rejection_reason_is_one_of_the_documented_ones() -> None:
    with pytest.raises(ValidationError, match="reason"):
        CallRejected(request_id="r", reason="bored", errors=[])
