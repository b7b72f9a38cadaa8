"""Bland's v2 batches: create, get, logs, stop, and the status_webhook phases (section 5.1)."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.calls import iso, parse_start_time
from sandbox.checks import InvalidRequest, validate_batch_v2
from sandbox.simulator import Simulator
from sandbox.state import BatchRecord
from sandbox.web import (
    checked_body,
    create_fault,
    drop_connection,
    refusal,
    sim,
)
from schemas.phone import PhoneNumberError, normalize_phone

SANDBOX_USER = "sandbox-user"
PREVIEW_SIZE = 10


def envelope(
    data: object, status_code: int = 200, errors: list[dict[str, str]] | None = None
) -> JSONResponse:
    """The v2 `{data, errors}` envelope."""
    return JSONResponse({"data": data, "errors": errors}, status_code=status_code)


def v2_error(status_code: int, code: str, messages: list[str]) -> JSONResponse:
    """A v2 error: `errors` shaped as `[{error, message}]`."""
    return envelope(None, status_code, [{"error": code, "message": m} for m in messages])


async def create_batch(request: Request) -> Response:
    """POST /v2/batches/create."""
    if (refused := await refusal(request)) is not None:
        return refused
    simulator = sim(request)
    try:
        body, _ = await checked_body(request, validate_batch_v2)
    except InvalidRequest as exc:
        return v2_error(400, "INVALID_PARAMETERS", exc.errors)
    fault = create_fault(request)
    if fault == "5xx":
        return v2_error(500, "INTERNAL_SERVER_ERROR", ["Internal server error."])
    if fault == "429":
        return v2_error(429, "RATE_LIMIT_EXCEEDED", ["Rate limit exceeded"])
    batch = BatchRecord(
        batch_id=str(uuid.uuid4()),
        version="v2",
        body=body,
        created_at=simulator.clock.now(),
        status_webhook=body.get("status_webhook")
        if isinstance(body.get("status_webhook"), str)
        else None,
    )
    simulator.store.batches[batch.batch_id] = batch
    simulator.spawn(run_batch(simulator, batch))
    if fault == "drop":
        return await drop_connection(request)
    return envelope({"batch_id": batch.batch_id})


async def run_batch(simulator: Simulator, batch: BatchRecord) -> None:
    """Walk the batch through its phases and dispatch its calls."""
    glob: dict[str, Any] = batch.body["global"]
    entries: list[Any] = batch.body["call_objects"]
    await _phase(simulator, batch, "validating")
    for index, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or not entry.get("phone_number"):
            reason = f"Entry #{index} did not have a phone number."
            await _phase(simulator, batch, "failed", code="source_invalid", reason=reason)
            return
    await simulator.clock.sleep(1.0)
    await _phase(simulator, batch, "dispatching")
    dispatched = 0
    for entry in entries:
        if batch.stopped:
            break
        dispatched += _dispatch(simulator, batch, {**glob, **entry})
    message = (
        f"Requested: {len(entries)}. Validated: {dispatched}. Dispatched: {dispatched}. CPS: 1.00."
    )
    await _phase(simulator, batch, "in_progress", message=message)
    await simulator.wait_finished(batch.call_ids)
    await _phase(simulator, batch, "completed", **batch_totals(simulator, batch))


def _dispatch(simulator: Simulator, batch: BatchRecord, body: dict[str, Any]) -> bool:
    """Place one entry's call; False (and an error log) when it is skipped."""
    try:
        phone = normalize_phone(body["phone_number"])
    except PhoneNumberError as exc:
        _log(simulator, batch, "error", {"message": exc.message})
        return False
    b_cid = body.get("b_cid")
    if isinstance(b_cid, str) and b_cid in simulator.store.calls:
        # What Bland does with a duplicate b_cid is undocumented: the entry is skipped.
        _log(simulator, batch, "error", {"message": f"Duplicate b_cid: {b_cid}"})
        return False
    # Batch calls skip the per-request 429 rules; they share the concurrency slots.
    now = simulator.clock.now()
    call = simulator.place(
        phone,
        body,
        now,
        start_at=parse_start_time(body.get("start_time")),
        batch_id=batch.batch_id,
        call_id=b_cid if isinstance(b_cid, str) else None,
    )
    batch.call_ids.append(call.call_id)
    return True


def batch_totals(simulator: Simulator, batch: BatchRecord) -> dict[str, int]:
    """calls_total, calls_successful (status completed), calls_failed."""
    calls = [simulator.store.calls[cid] for cid in batch.call_ids]
    successful = sum(1 for c in calls if c.status == "completed")
    return {
        "calls_total": len(calls),
        "calls_successful": successful,
        "calls_failed": len(calls) - successful,
    }


def _log(
    simulator: Simulator, batch: BatchRecord, event_type: str, payload: dict[str, Any]
) -> None:
    batch.logs.append(
        {
            "id": len(batch.logs) + 1,
            "batch_id": batch.batch_id,
            "org_id": SANDBOX_USER,
            "event_type": event_type,
            "timestamp": iso(simulator.clock.now()),
            "payload": payload,
        }
    )


async def _phase(simulator: Simulator, batch: BatchRecord, status: str, **extra: Any) -> None:
    """Record a phase in the logs and POST it to the status_webhook (one attempt, no retry)."""
    batch.status = status
    if status == "completed":
        _log(simulator, batch, "complete", dict(extra))
    else:
        message = extra.get("message") or extra.get("reason") or f"Batch {status}."
        _log(simulator, batch, "lifecycle", {"message": message, "state_change": status})
    url = batch.status_webhook
    if not url:
        return
    payload = {
        "batch_id": batch.batch_id,
        "status": status,
        "timestamp": iso(simulator.clock.now()),
        **extra,
    }
    await simulator.batch_webhook(
        "batch_status",
        url,
        batch.batch_id,
        payload,
        retries=0,
        timeout_s=simulator.config.batch_status_timeout_s,
    )


def _batch(request: Request) -> BatchRecord | None:
    batch = sim(request).store.batches.get(request.path_params["batch_id"])
    return batch if batch is not None and batch.version == "v2" else None


async def get_batch(request: Request) -> Response:
    """GET /v2/batches/{batch_id}: no status field, as documented."""
    if (refused := await refusal(request, read=True)) is not None:
        return refused
    batch = _batch(request)
    if batch is None:
        return v2_error(404, "NOT_FOUND", ["Batch not found"])
    return envelope(
        {
            "id": batch.batch_id,
            "user_id": SANDBOX_USER,
            "base_prompt": json.dumps(batch.body.get("global", {})),
            "created_at": iso(batch.created_at),
            "call_objects": batch.body.get("call_objects", [])[:PREVIEW_SIZE],
            "description": batch.body.get("description") or "Untitled Batch",
        }
    )


async def batch_logs(request: Request) -> Response:
    """GET /v2/batches/{batch_id}/logs?take=&skip=&direction= (default desc)."""
    if (refused := await refusal(request, read=True)) is not None:
        return refused
    batch = _batch(request)
    if batch is None:
        return v2_error(404, "NOT_FOUND", ["Batch not found"])
    params = request.query_params
    try:
        skip = int(params.get("skip", 0))
        take = int(params["take"]) if "take" in params else None
    except ValueError:
        return v2_error(400, "INVALID_PARAMETERS", ["take and skip must be integers"])
    logs = list(batch.logs) if params.get("direction") == "asc" else list(reversed(batch.logs))
    logs = logs[skip:]
    return envelope(logs if take is None else logs[:take])


async def stop_batch(request: Request) -> Response:
    """POST /v2/batches/{batch_id}/stop: cancels every call that has not connected yet."""
    if (refused := await refusal(request)) is not None:
        return refused
    batch = _batch(request)
    if batch is None:
        return v2_error(404, "NOT_FOUND", ["Batch not found"])
    stop_calls(sim(request), batch)
    return envelope(None)


def stop_calls(simulator: Simulator, batch: BatchRecord) -> int:
    """Stop the batch's dispatching and cancel its calls that are not live; how many."""
    batch.stopped = True
    stopped = 0
    for call_id in batch.call_ids:
        call = simulator.store.calls[call_id]
        if call.started_at is None and simulator.stop(call_id):
            stopped += 1
    return stopped


ROUTES = [
    Route("/v2/batches/create", create_batch, methods=["POST"]),
    Route("/v2/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/v2/batches/{batch_id}/logs", batch_logs, methods=["GET"]),
    Route("/v2/batches/{batch_id}/stop", stop_batch, methods=["POST"]),
]
