"""The service's parts, built by the composition root on a fresh ledger and one sandbox.

Nothing is started: a test drives the dispatcher, poller and reconciler round by round.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from schemas.envelope import DialerOptions
from service.clock import Clock, utcnow
from service.composition import Parts, assemble
from service.ledger import NewCall
from service.ledger.migrate import upgrade
from service.settings import Settings
from tests.support.sandbox import SandboxProcess, free_port

Rig = Parts


@asynccontextmanager
async def rig(
    db_url: str,
    sandbox: SandboxProcess | str,
    *,
    clock: Clock = utcnow,
    forward_transport: httpx.AsyncBaseTransport | None = None,
    serve_http: bool = False,
    **overrides: Any,
) -> AsyncIterator[Parts]:
    """Migrate a fresh ledger and assemble the service on it; closed afterwards.

    With `serve_http`, the service's own HTTP app listens on a free port and that port's
    `/webhooks/bland` is the webhook URL given to Bland. `sandbox` may be a bare base URL
    (a Bland that is not a sandbox: nothing listening, say).
    """
    port = free_port()
    if isinstance(sandbox, str):
        bland = {"bland_base_url": sandbox, "bland_api_key": "test-api-key"}
    else:
        bland = {
            "bland_base_url": sandbox.base_url,
            "bland_api_key": sandbox.api_key,
            "webhook_secret": sandbox.webhook_secret,
        }
    values: dict[str, Any] = {
        "database_url": db_url,
        **bland,
        "max_calls_per_second": 100.0,
        # Test numbers (555, fictional) have no time zone, and tests call them at any hour;
        # tests of limits and compliance set their own.
        "calling_window": "00:00-24:00",
        "region_rules": {},  # area code 305 is Florida, whose rule narrows any window to 08-20
        "max_calls_per_number_24h": 0,
        "same_number_gap_s": 0.0,
        "reconcile_grace_s": 300.0,
        "http_host": "127.0.0.1",
        "http_port": port,
        **({"webhook_url": f"http://127.0.0.1:{port}/webhooks/bland"} if serve_http else {}),
        **overrides,
    }
    settings = Settings(**values)
    await upgrade(settings)
    parts = await assemble(
        settings, clock=clock, registry=CollectorRegistry(), forward_transport=forward_transport
    )
    try:
        if serve_http:
            async with serving(parts):
                yield parts
        else:
            yield parts
    finally:
        await parts.dispatcher.stop(grace_s=1.0)
        await parts.poller.stop(grace_s=1.0)
        await parts.webhooks.aclose()
        await parts.bland.aclose()
        await parts.ledger.close()


@asynccontextmanager
async def serving(parts: Parts) -> AsyncIterator[None]:
    """The parts' HTTP app on their settings' port, until the block exits."""
    config = uvicorn.Config(
        parts.http,
        host=parts.settings.http_host,
        port=parts.settings.http_port,
        log_config=None,
        lifespan="off",
        ws="none",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield
    finally:
        server.should_exit = True
        await task


def new_call(request_id: str, phone: str, *, correlation_id: str | None = None) -> NewCall:
    """A due request to `phone`."""
    return NewCall(
        request_id=request_id,
        correlation_id=correlation_id,
        reply_to=None,
        phone_number=phone,
        body={"phone_number": phone, "task": "Say hello."},
        options=DialerOptions(),
        publisher_webhook=None,
    )
