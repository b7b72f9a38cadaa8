"""HTTP plumbing shared by the sandbox's routes: auth, bodies, injected faults, dropping."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from sandbox import faults as fault_rules
from sandbox.plans import RATE_LIMIT_MESSAGE
from sandbox.simulator import Simulator

T = TypeVar("T")
AUTH_FAILURE = {"data": None, "errors": [{"error": "AUTH_FAILURE", "message": "Unauthorized"}]}


class NoResponse(Response):
    """Marker: the connection was closed and nothing is to be sent."""


def sim(request: Request) -> Simulator:
    """The simulator behind this app."""
    simulator: Simulator = request.app.state.simulator
    return simulator


def api_key(request: Request) -> str:
    """The key from `Authorization: Bearer <key>` or a bare `Authorization: <key>`."""
    value = request.headers.get("authorization", "").strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value


def authorized(request: Request) -> bool:
    """Any non-empty key, or one of the configured keys."""
    key = api_key(request)
    keys = sim(request).config.api_keys
    return bool(key) and (not keys or key in keys)


def unauthorized() -> JSONResponse:
    """Bland's 401 envelope."""
    return JSONResponse(AUTH_FAILURE, status_code=401)


async def refusal(request: Request, *, read: bool = False) -> Response | None:
    """The configured latency, then the answer to send instead of serving, if any.

    A request without a valid key gets the 401; a read (`read=True`) may get an injected 500.
    """
    await added_latency(request)
    if not authorized(request):
        return unauthorized()
    return read_fault(request) if read else None


def error(status_code: int, message: str, errors: list[str] | None = None) -> JSONResponse:
    """The common `{"status":"error","message":…}` envelope."""
    body: dict[str, Any] = {"status": "error", "message": message}
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status_code)


async def json_body(request: Request) -> object:
    """The parsed JSON body ({} when empty), or None when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return None


async def checked_body(request: Request, check: Callable[..., T]) -> tuple[dict[str, Any], T]:
    """The JSON body and what `check` says of it under the webhook rules; raises InvalidRequest."""
    config = sim(request).config
    body = await json_body(request)
    verdict = check(
        body, allow_http=config.allow_http_webhooks, strict_https=config.strict_https_webhooks
    )
    assert isinstance(body, dict)  # noqa: S101 - every validator rejects anything else
    return body, verdict


async def added_latency(request: Request) -> None:
    """Sleep for the configured latency; lowering the knob meanwhile shortens the wait."""
    simulator = sim(request)
    loop = asyncio.get_running_loop()
    started = loop.time()
    while (left_s := simulator.faults.latency_ms / 1000.0 - (loop.time() - started)) > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(simulator.faults_change(), left_s)


def create_fault(request: Request) -> str | None:
    """Draw the fault for a create request (seeded)."""
    simulator = sim(request)
    return fault_rules.create_fault(simulator.fault_rng, simulator.faults)


def read_fault(request: Request) -> JSONResponse | None:
    """A 500 for a read when the read-error share says so."""
    simulator = sim(request)
    if fault_rules.read_fault(simulator.fault_rng, simulator.faults):
        return error(500, "Internal server error.")
    return None


def fault_response(kind: str) -> JSONResponse:
    """The answer for a 5xx or 429 fault (nothing was recorded)."""
    if kind == "5xx":
        return error(500, fault_rules.SERVER_ERROR_MESSAGE)
    return error(429, RATE_LIMIT_MESSAGE)


async def drop_connection(request: Request) -> Response:
    """Close the client's connection without an answer (the request was already recorded)."""
    client = request.scope.get("client")
    connections: Iterable[Any] = getattr(request.app.state, "connections", ())
    for protocol in list(connections):
        if client is not None and getattr(protocol, "client", None) == tuple(client):
            protocol.transport.close()
            # Let connection_lost run so the server drops whatever we return.
            for _ in range(3):
                await asyncio.sleep(0)
            return NoResponse()
    return error(500, "Internal server error.")
