"""A tap on the events exchange: an exclusive, auto-deleted queue bound to every event."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from service.bus.connection import Names

OnEvent = Callable[[AbstractIncomingMessage], Awaitable[None]]


@contextlib.asynccontextmanager
async def tap_events(url: str, prefix: str, on_event: OnEvent) -> AsyncIterator[AbstractQueue]:
    """Call `on_event` for every event published from now on, until the block exits."""
    connection = await aio_pika.connect_robust(url)
    async with connection:
        channel = await connection.channel()
        await channel.declare_exchange(
            Names(prefix).events, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(Names(prefix).events, "#")
        await queue.consume(on_event, no_ack=True)
        yield queue
