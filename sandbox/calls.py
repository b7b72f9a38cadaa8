"""Pure helpers for call objects: rendering (bland-api.md section 3) and request parsing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from sandbox.outcomes import SUMMARIES, disposition_tag
from sandbox.state import SimCall

START_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(?:\.\d+)?\s*(Z|[+-]\d{2}:?\d{2})?$"
)
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
HTTPS_MESSAGE = "webhook must be a string that starts with https://."


def iso(moment: datetime | None) -> str | None:
    """Bland's timestamp form, e.g. 2024-04-27T23:51:18.025251+00:00."""
    return moment.isoformat() if moment is not None else None


def parse_start_time(value: object) -> datetime | None:
    """`YYYY-MM-DD HH:MM:SS -HH:MM` (offset optional, UTC by default); None if unparsable."""
    if not isinstance(value, str):
        return None
    match = START_TIME.match(value.strip())
    if match is None:
        return None
    day, time, offset = match.groups()
    text = f"{day}T{time}"
    if offset and offset != "Z":
        text += offset if ":" in offset else f"{offset[:3]}:{offset[3:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def webhook_problem(url: object, *, allow_http: bool, strict: bool) -> str | None:
    """Bland's https rule; plain http is let through when allowed (loopback unless strict)."""
    if url is None:
        return None
    if not isinstance(url, str):
        return HTTPS_MESSAGE
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.netloc:
        return None
    loopback_ok = not strict and parts.hostname in LOOPBACK_HOSTS
    if parts.scheme == "http" and parts.netloc and (allow_http or loopback_ok):
        return None
    return HTTPS_MESSAGE


def fill_template(template: str, values: dict[str, Any]) -> str:
    """Replace {{key}} placeholders (case-sensitive) with values from a legacy call_data row."""
    return re.sub(
        r"\{\{\s*(\w+)\s*\}\}",
        lambda m: str(values.get(m.group(1), m.group(0))),
        template,
    )


def _minutes(seconds: float) -> float:
    return round(seconds / 60.0, 4)


def render(call: SimCall, *, transcripts: bool = True) -> dict[str, Any]:
    """The call object as GET /v1/calls/{id} and the post-call webhook carry it."""
    body = call.body
    max_duration = body.get("max_duration", 30)
    end_at = call.end_at
    if end_at is None and call.started_at is not None and isinstance(max_duration, int | float):
        end_at = call.started_at + timedelta(minutes=float(max_duration))
    kind = call.final_kind
    record = body.get("record") is True
    answered = call.answered_by in {"human", "voicemail"}
    obj: dict[str, Any] = {
        "call_id": call.call_id,
        "c_id": call.call_id,
        "call_length": _minutes(call.talk_s),
        "corrected_duration": str(round(call.talk_s)),
        "batch_id": call.batch_id,
        "to": call.phone_number,
        "from": body.get("from") or call.from_number,
        "request_data": body.get("request_data") or {},
        "completed": call.completed,
        "inbound": False,
        "created_at": iso(call.created_at),
        "started_at": iso(call.started_at),
        "end_at": iso(end_at),
        "queue_status": call.queue_status,
        "status": call.status,
        "error_message": call.error_message,
        "endpoint_url": "api.prod.bland.ai",
        "max_duration": max_duration,
        "variables": {
            "to": call.phone_number,
            "phone_number": call.phone_number,
            "call_id": call.call_id,
            "timezone": body.get("timezone", "America/Los_Angeles"),
        },
        "answered_by": call.answered_by,
        "record": record,
        "recording_url": (
            f"https://sandbox.invalid/recordings/{call.call_id}.mp3"
            if record and answered and call.completed
            else None
        ),
        "metadata": body.get("metadata") or {},
        "summary": SUMMARIES.get(kind, "") if kind else None,
        "disposition_tag": disposition_tag(kind, body.get("dispositions")) if kind else None,
        "price": call.price,
        "local_dialing": False,
        "call_ended_by": call.call_ended_by,
        "pathway_id": body.get("pathway_id"),
        "pathway_version": None,
        "pathway_logs": None,
        "analysis": None,
        "concatenated_transcript": _transcript(call) if answered and call.completed else "",
    }
    if transcripts:
        obj["transcripts"] = _transcripts(call) if answered and call.completed else []
    return obj


def _transcript(call: SimCall) -> str:
    return "\n ".join(f"{item['user']}: {item['text']}" for item in _transcripts(call))


def _transcripts(call: SimCall) -> list[dict[str, Any]]:
    first = call.body.get("first_sentence") or "Hello, this is the sandbox agent."
    lines = [("assistant", str(first)), ("user", "Hello?")]
    if call.answered_by == "voicemail":
        lines = [("user", "Please leave a message after the tone.")]
    return [
        {
            "id": index,
            "created_at": iso(call.started_at),
            "text": text,
            "user": user,
            "c_id": call.call_id,
        }
        for index, (user, text) in enumerate(lines, start=1)
    ]
