"""The sandbox's own endpoints under /_sandbox: ground truth, faults, outcomes, reset."""

from __future__ import annotations

from dataclasses import asdict, fields, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.calls import iso
from sandbox.faults import updated
from sandbox.outcomes import Shares
from sandbox.web import json_body, sim


async def health(request: Request) -> Response:
    """GET /_sandbox/health."""
    simulator = sim(request)
    return JSONResponse({"status": "ok", "plan": simulator.config.plan.name})


async def ground_truth(request: Request) -> Response:
    """GET /_sandbox/calls: every call the sandbox recorded, in the order it recorded them."""
    calls = [
        {
            "call_id": call.call_id,
            "phone_number": call.phone_number,
            "metadata": call.body.get("metadata") or {},
            "created_at": iso(call.created_at),
            "status": call.status,
            "queue_status": call.queue_status,
            "completed": call.completed,
            "batch_id": call.batch_id,
            "response_dropped": call.response_dropped,
            "body": call.body,
        }
        for call in sim(request).store.calls.values()
    ]
    return JSONResponse({"count": len(calls), "calls": calls})


async def counts(request: Request) -> Response:
    """GET /_sandbox/counts: calls per number, rejections, concurrency, work in progress."""
    simulator = sim(request)
    body = simulator.store.counts()
    body["active"] = simulator.slots.active
    body["max_active"] = simulator.slots.max_active
    body["posts_in_flight"] = simulator.posts_in_flight
    body["live_calls"] = simulator.live_calls
    body["max_live_calls"] = simulator.max_live_calls
    body["pending_webhooks"] = simulator.pending_webhooks
    return JSONResponse(body)


async def attempts(request: Request) -> Response:
    """GET /_sandbox/requests: every POST /v1/calls, accepted or not, in arrival order."""
    noted = sim(request).store.attempts
    return JSONResponse({"count": len(noted), "requests": noted})


async def webhook_log(request: Request) -> Response:
    """GET /_sandbox/webhooks: every delivery attempt (and every webhook lost on purpose)."""
    return JSONResponse({"deliveries": sim(request).sender.log})


async def reset(request: Request) -> Response:
    """POST /_sandbox/reset: forget every call, batch and counter; faults back to start-up."""
    await sim(request).reset()
    return JSONResponse({"status": "ok"})


async def get_faults(request: Request) -> Response:
    """GET /_sandbox/faults."""
    return JSONResponse(sim(request).faults.as_dict())


async def put_faults(request: Request) -> Response:
    """PUT /_sandbox/faults with some knobs; the others keep their values."""
    simulator = sim(request)
    body = await json_body(request)
    if not isinstance(body, dict):
        return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
    try:
        simulator.change_faults(updated(simulator.faults, body))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(simulator.faults.as_dict())


async def get_outcomes(request: Request) -> Response:
    """GET /_sandbox/outcomes: the outcome shares."""
    return JSONResponse(asdict(sim(request).shares))


async def put_outcomes(request: Request) -> Response:
    """PUT /_sandbox/outcomes: change outcome shares for calls placed from now on."""
    simulator = sim(request)
    body = await json_body(request)
    known = {f.name for f in fields(Shares)}
    if not isinstance(body, dict) or not set(body) <= known or not _shares_ok(body):
        return JSONResponse(
            {"error": f"body must map some of {sorted(known)} to non-negative numbers"},
            status_code=400,
        )
    simulator.shares = replace(simulator.shares, **{k: float(v) for k, v in body.items()})
    return JSONResponse(asdict(simulator.shares))


def _shares_ok(body: dict[str, Any]) -> bool:
    return all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in body.values()
    )


ROUTES = [
    Route("/_sandbox/health", health, methods=["GET"]),
    Route("/_sandbox/calls", ground_truth, methods=["GET"]),
    Route("/_sandbox/counts", counts, methods=["GET"]),
    Route("/_sandbox/requests", attempts, methods=["GET"]),
    Route("/_sandbox/webhooks", webhook_log, methods=["GET"]),
    Route("/_sandbox/reset", reset, methods=["POST"]),
    Route("/_sandbox/faults", get_faults, methods=["GET"]),
    Route("/_sandbox/faults", put_faults, methods=["PUT"]),
    Route("/_sandbox/outcomes", get_outcomes, methods=["GET"]),
    Route("/_sandbox/outcomes", put_outcomes, methods=["PUT"]),
]
