"""Pure reading of Bland's call objects (webhook bodies, call details) into outcomes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from service.bland.metadata import request_id_in
from service.ledger import Outcome
from service.ledger.states import classify_outcome

FINISHED_QUEUE_STATUSES = frozenset(
    {"complete", "completed", "pre_queue_error", "queue_error", "call_error", "complete_error"}
)
Source = Literal["webhook", "poll"]


def is_post_call(payload: Mapping[str, Any]) -> bool:
    """Post-call payloads carry call_id with completed/queue_status; live events do not."""
    if "category" in payload and "log_level" in payload:
        return False
    has_id = isinstance(payload.get("call_id") or payload.get("c_id"), str)
    return has_id and ("completed" in payload or "queue_status" in payload)


def parse_outcome(payload: object, source: Source) -> Outcome | None:
    """The outcome a post-call payload or call-details object describes; None for anything else."""
    if not isinstance(payload, Mapping) or not is_post_call(payload):
        return None
    call_id = payload.get("call_id") or payload.get("c_id")
    if not isinstance(call_id, str) or not call_id:
        return None
    queue_status = _text(payload.get("queue_status"))
    completed = payload.get("completed")
    if not isinstance(completed, bool):  # `completed` wins; without it, the queue status says
        completed = (queue_status or "").lower() in FINISHED_QUEUE_STATUSES
    metadata = payload.get("metadata")
    return Outcome(
        call_id=call_id,
        status=_text(payload.get("status")),
        answered_by=_text(payload.get("answered_by")),
        call_length_min=_number(payload.get("call_length")),
        duration_s=_number(payload.get("corrected_duration")),
        summary=_text(payload.get("summary")),
        disposition_tag=_text(payload.get("disposition_tag")),
        recording_url=_text(payload.get("recording_url")),
        error_message=_text(payload.get("error_message")),
        price_usd=_number(payload.get("price")),
        metadata=dict(metadata) if isinstance(metadata, Mapping) else None,
        completed=completed,
        source=source,
        raw=dict(payload),
        queue_status=queue_status,
    )


def parse_time(value: object) -> datetime | None:
    """Bland's timestamps (`…+00:00`, `…Z`, naive = UTC); None when unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def ended_at(payload: Mapping[str, Any], now: datetime) -> datetime:
    """When a finished call ended: the earliest of `end_at` (the cut-off, or the end), its
    start plus its duration, and now."""
    candidates = [now]
    end = parse_time(payload.get("end_at"))
    if end is not None:
        candidates.append(end)
    start = parse_time(payload.get("started_at"))
    duration_s = _number(payload.get("corrected_duration"))
    if start is not None and duration_s is not None:
        candidates.append(start + timedelta(seconds=duration_s))
    return min(candidates)


def request_id_of(outcome: Outcome) -> str | None:
    """Our request id as echoed in the call's metadata, if present."""
    return request_id_in(outcome.metadata)


def is_final(outcome: Outcome) -> bool:
    """True when the outcome settles the request (the call is over)."""
    return classify_outcome(outcome.status, outcome.completed, outcome.queue_status) is not None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: object) -> float | None:
    """Bland's numbers arrive as numbers or as strings (`corrected_duration: "45"`)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None
