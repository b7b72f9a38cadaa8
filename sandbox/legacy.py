"""Bland's legacy v1 batches: POST /v1/batches, GET and stop (bland-api.md section 5.2)."""

from __future__ import annotations

import secrets
import string
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.batches import batch_totals, stop_calls
from sandbox.calls import fill_template, iso, render
from sandbox.checks import InvalidRequest, normalize_or_raise, validate_batch_v1
from sandbox.simulator import Simulator
from sandbox.state import BatchRecord
from sandbox.web import (
    checked_body,
    create_fault,
    drop_connection,
    error,
    fault_response,
    refusal,
    sim,
)

BATCH_ONLY_KEYS = {
    "base_prompt",
    "call_data",
    "label",
    "campaign_id",
    "test_mode",
    "batch_webhook",
    "batch_id",
}
ID_ALPHABET = string.ascii_letters + string.digits


def new_batch_id() -> str:
    """A legacy id such as `3p7rQ3p9sT5bzmFa-gen-batch`."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(16)) + "-gen-batch"


def call_bodies(body: dict[str, Any]) -> list[dict[str, Any]]:
    """One /v1/calls body per call_data row (only the first in test_mode)."""
    shared = {k: v for k, v in body.items() if k not in BATCH_ONLY_KEYS}
    rows: list[dict[str, Any]] = body["call_data"]
    if body.get("test_mode") is True:
        rows = rows[:1]
    return [
        {
            **shared,
            "task": fill_template(body["base_prompt"], row),
            "phone_number": row["phone_number"],
        }
        for row in rows
    ]


async def create_batch(request: Request) -> Response:
    """POST /v1/batches."""
    if (refused := await refusal(request)) is not None:
        return refused
    simulator = sim(request)
    try:
        body, _ = await checked_body(request, validate_batch_v1)
    except InvalidRequest as exc:
        return error(400, "Invalid parameters", exc.errors)
    fault = create_fault(request)
    if fault in {"5xx", "429"}:
        return fault_response(fault)
    now = simulator.clock.now()
    batch = BatchRecord(new_batch_id(), "v1", body, now, status="in-progress")
    simulator.store.batches[batch.batch_id] = batch
    for call_body in call_bodies(body):
        phone = normalize_or_raise(call_body["phone_number"])
        call = simulator.place(phone, call_body, now, batch_id=batch.batch_id)
        batch.call_ids.append(call.call_id)
    simulator.spawn(_finish(simulator, batch))
    if fault == "drop":
        return await drop_connection(request)
    return JSONResponse({"message": "success", "batch_id": batch.batch_id})


async def _finish(simulator: Simulator, batch: BatchRecord) -> None:
    """Mark the batch completed once its calls are, then POST the batch_webhook."""
    await simulator.wait_finished(batch.call_ids)
    batch.status = "completed"
    url = batch.body.get("batch_webhook")
    if not isinstance(url, str) or not url:
        return
    await simulator.batch_webhook(
        "batch",
        url,
        batch.batch_id,
        {"batch_id": batch.batch_id, "status": "completed"},
        retries=simulator.faults.webhook_retries,
        timeout_s=simulator.config.webhook_timeout_s,
    )


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "true").lower() not in {"false", "0", "no"}


def _batch(request: Request) -> BatchRecord | None:
    batch = sim(request).store.batches.get(request.path_params["batch_id"])
    return batch if batch is not None and batch.version == "v1" else None


async def get_batch(request: Request) -> Response:
    """GET /v1/batches/{batch_id} with include_calls / include_transcripts / include_analysis."""
    if (refused := await refusal(request, read=True)) is not None:
        return refused
    batch = _batch(request)
    if batch is None:
        return error(404, "Batch not found")
    simulator = sim(request)
    calls = [simulator.store.calls[cid] for cid in batch.call_ids]
    shared = {k: v for k, v in batch.body.items() if k not in BATCH_ONLY_KEYS}
    result: dict[str, Any] = {
        "status": batch.status,
        "batch_params": {
            "id": batch.batch_id,
            "campaign_id": batch.body.get("campaign_id"),
            "created_at": iso(batch.created_at),
            "label": batch.body.get("label"),
            "base_prompt": batch.body.get("base_prompt"),
            "endpoint_code": "api.prod.bland.ai",
            "call_params": shared,
        },
    }
    if _flag(request, "include_calls"):
        transcripts = _flag(request, "include_transcripts")
        result["call_data"] = [render(c, transcripts=transcripts) for c in calls]
    if _flag(request, "include_analysis"):
        result["analysis"] = _analysis(simulator, batch)
    return JSONResponse(result)


def _analysis(simulator: Simulator, batch: BatchRecord) -> dict[str, Any]:
    calls = [simulator.store.calls[cid] for cid in batch.call_ids]
    lengths = [c.talk_s / 60.0 for c in calls if c.completed]
    nonzero = [x for x in lengths if x > 0]
    totals = batch_totals(simulator, batch)
    queue_statuses: dict[str, int] = {}
    for call in calls:
        queue_statuses[call.queue_status] = queue_statuses.get(call.queue_status, 0) + 1
    return {
        "total_calls": totals["calls_total"],
        "completed_calls": sum(1 for c in calls if c.completed),
        "in_progress_calls": sum(1 for c in calls if not c.completed),
        "queue_statuses": queue_statuses,
        "call_lengths": {
            "average": sum(lengths) / len(lengths) if lengths else 0,
            "average_nonzero": sum(nonzero) / len(nonzero) if nonzero else 0,
            "all": lengths,
        },
        "call_ids": list(batch.call_ids),
        "error_messages": [
            {"call_id": c.call_id, "error_message": c.error_message}
            for c in calls
            if c.error_message
        ],
        "endpoints": {},
    }


async def stop_batch(request: Request) -> Response:
    """POST /v1/batches/{batch_id}/stop."""
    if (refused := await refusal(request)) is not None:
        return refused
    batch = _batch(request)
    if batch is None:
        return error(404, "Batch not found")
    stopped = stop_calls(sim(request), batch)
    return JSONResponse(
        {
            "status": "success",
            "message": "Successfully stopped batch",
            "num_calls": stopped,
            "batch_id": batch.batch_id,
        }
    )


ROUTES = [
    Route("/v1/batches", create_batch, methods=["POST"]),
    Route("/v1/batches/{batch_id}", get_batch, methods=["GET"]),
    Route("/v1/batches/{batch_id}/stop", stop_batch, methods=["POST"]),
]
