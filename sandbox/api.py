"""Bland's call endpoints: send, details, list, stop (bland-api.md sections 2 to 4)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.calls import parse_start_time, render
from sandbox.checks import InvalidRequest, validate_call
from sandbox.simulator import Rejected
from sandbox.state import SimCall
from sandbox.web import (
    added_latency,
    authorized,
    checked_body,
    create_fault,
    drop_connection,
    error,
    fault_response,
    refusal,
    sim,
    unauthorized,
)

QUEUED = "Call successfully queued."
NOT_FOUND = "Call not found"
STOP_NOT_FOUND = "SID not found for the given c_id."


async def create_call(request: Request) -> Response:
    """POST /v1/calls; every attempt is noted for /_sandbox/requests."""
    simulator = sim(request)
    simulator.posts_in_flight += 1
    try:
        return await _create_call(request)
    finally:
        simulator.posts_in_flight -= 1


async def _create_call(request: Request) -> Response:
    await added_latency(request)
    simulator = sim(request)
    note = simulator.store.note_attempt
    now = simulator.clock.now()
    if not authorized(request):
        note(now, "auth", 401)
        return unauthorized()
    try:
        body, phone = await checked_body(request, validate_call)
    except InvalidRequest as exc:
        note(now, "invalid", 400)
        return error(400, "Invalid parameters", exc.errors)
    fault = create_fault(request)
    if fault in {"5xx", "429"}:
        response = fault_response(fault)
        note(now, f"fault_{fault}", response.status_code, phone)
        return response
    start_at = parse_start_time(body.get("start_time"))
    immediate = start_at is None or start_at <= now
    try:
        holds_slot = simulator.admit(phone, now, immediate=immediate)
    except Rejected as exc:
        note(now, exc.reason, exc.status_code, phone)
        return error(exc.status_code, exc.message)
    call = simulator.place(phone, body, now, start_at=start_at, holds_slot=holds_slot)
    if fault == "drop":
        call.response_dropped = True
        note(now, "dropped", None, phone, call.call_id)
        return await drop_connection(request)
    note(now, "queued", 200, phone, call.call_id)
    return JSONResponse(
        {"status": "success", "message": QUEUED, "call_id": call.call_id, "batch_id": None}
    )


async def get_call(request: Request) -> Response:
    """GET /v1/calls/{call_id}; an unknown id is a 404 (Bland's answer is undocumented)."""
    if (refused := await refusal(request, read=True)) is not None:
        return refused
    call = sim(request).store.calls.get(request.path_params["call_id"])
    if call is None:
        return error(404, NOT_FOUND)
    return JSONResponse(render(call))


async def stop_call(request: Request) -> Response:
    """POST /v1/calls/{call_id}/stop: ends a live call, cancels a waiting or scheduled one."""
    if (refused := await refusal(request)) is not None:
        return refused
    simulator = sim(request)
    call_id = request.path_params["call_id"]
    if call_id not in simulator.store.calls:
        return error(404, STOP_NOT_FOUND)
    if not simulator.stop(call_id):
        return error(400, STOP_NOT_FOUND)
    return JSONResponse({"status": "success", "message": "Call ended successfully."})


async def list_calls(request: Request) -> Response:
    """GET /v1/calls with Bland's filters and index paging; no transcripts."""
    if (refused := await refusal(request, read=True)) is not None:
        return refused
    try:
        matches = [c for c in sim(request).store.calls.values() if _matches(c, request)]
        params = request.query_params
        matches.sort(key=lambda c: c.created_at, reverse=not _flag(params.get("ascending")))
        start = int(params.get("from", 0))
        end = int(params["to"]) if "to" in params else len(matches)
        limit = int(params.get("limit", 1000))
    except ValueError as exc:
        return error(400, f"Invalid query parameter: {exc}")
    page = matches[start:end][:limit]
    return JSONResponse(
        {
            "total_count": len(matches),
            "count": len(page),
            "calls": [render(c, transcripts=False) for c in page],
        }
    )


def _flag(value: str | None) -> bool:
    return value is not None and value.lower() in {"true", "1", "yes"}


def _matches(call: SimCall, request: Request) -> bool:
    params = request.query_params
    numbers = {
        "to_number": call.phone_number,
        "from_number": call.body.get("from") or call.from_number,
    }
    for key, number in numbers.items():
        if key in params and _digits(params[key]) != _digits(str(number)):
            return False
    exact = {"batch_id": call.batch_id, "answered_by": call.answered_by}
    for key, value in exact.items():
        if key in params and params[key] != value:
            return False
    if "completed" in params and _flag(params["completed"]) != call.completed:
        return False
    if "start_date" in params and call.created_at < _bound(params["start_date"], end=False):
        return False
    return not ("end_date" in params and call.created_at > _bound(params["end_date"], end=True))


def _digits(value: str) -> str:
    return "".join(ch for ch in value if ch.isdigit()) or value


def _bound(value: str, *, end: bool) -> datetime:
    """A date bound: `YYYY-MM-DD` (UTC, whole day inclusive) or ISO 8601 with an offset."""
    if len(value) == 10:
        day = datetime.fromisoformat(value).date()
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        return moment + timedelta(days=1) - timedelta(microseconds=1) if end else moment
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


ROUTES = [
    Route("/v1/calls", create_call, methods=["POST"]),
    Route("/v1/calls", list_calls, methods=["GET"]),
    Route("/v1/calls/{call_id}", get_call, methods=["GET"]),
    Route("/v1/calls/{call_id}/stop", stop_call, methods=["POST"]),
]
