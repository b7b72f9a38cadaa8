"""Review: a POST to Bland ends within the bound the sweep of stale claims relies on."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry

from service.bland.client import BlandClient, max_request_s
from service.errors import UnknownOutcomeError
from service.metrics import Metrics
from service.settings import Settings

pytestmark = pytest.mark.integration

ANSWER = b'{"status":"success","call_id":"c-trickled"}'


@contextlib.asynccontextmanager
async def trickling_server(byte_every_s: float) -> AsyncIterator[str]:
    """An HTTP server that answers 200 one byte at a time: no single read ever times out."""

    handlers: set[asyncio.Task[object]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            handlers.add(task)
        with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
            await reader.readuntil(b"\r\n\r\n")
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(ANSWER)}\r\n\r\n"
            writer.write(head.encode())
            for byte in ANSWER:
                await asyncio.sleep(byte_every_s)
                writer.write(bytes([byte]))
                await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        server.close()
        await server.wait_closed()


async def test_a_trickled_answer_is_an_unknown_outcome_within_the_bound() -> None:
    async with trickling_server(byte_every_s=0.2) as url:
        settings = Settings(
            bland_base_url=url,
            bland_api_key="k",
            bland_connect_timeout_s=0.2,
            bland_read_timeout_s=0.5,
        )
        bland = BlandClient(settings, Metrics(CollectorRegistry()))
        started = time.monotonic()
        try:
            with pytest.raises(UnknownOutcomeError):
                await bland.create_call({"phone_number": "+14155550100", "task": "t"})
        finally:
            await bland.aclose()
        # Each read got a byte in time, yet the whole POST ended by the bound (+ scheduling).
        assert time.monotonic() - started < max_request_s(settings) + 1.0
