"""Test helpers around the real broker: a tap on the events exchange, publishing raw requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue, AbstractRobustConnection

from service.bus.topology import declare
from service.ledger import Ledger
from service.ledger.migrate import upgrade
from service.settings import Settings
from tests.support.waits import DEADLINE_S, until


@dataclass(frozen=True)
class Seen:
    """One message read by a tap."""

    routing_key: str
    body: dict[str, Any]
    message: AbstractIncomingMessage

    @property
    def type(self) -> str | None:
        """The AMQP type property."""
        return self.message.type


async def migrated_ledger(settings: Settings) -> Ledger:
    """A ledger on a freshly migrated database."""
    await upgrade(settings)
    return await Ledger.open(settings)


class Tap:
    """An exclusive queue bound to an exchange (`#`), collecting everything that arrives."""

    def __init__(self, connection: AbstractRobustConnection, exchange: str) -> None:
        self.connection = connection
        self.exchange = exchange
        self.seen: list[Seen] = []
        self.queue_name = ""

    @classmethod
    async def open(cls, settings: Settings, exchange: str) -> Tap:
        """Connect, declare the topology, bind a server-named exclusive queue."""
        connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
        tap = cls(connection, exchange)
        channel = await connection.channel()
        await declare(channel, settings)
        queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
        await queue.bind(exchange, "#")
        tap.queue_name = queue.name
        await queue.consume(tap._on_message, no_ack=True)
        return tap

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.seen.append(Seen(message.routing_key or "", json.loads(message.body), message))

    def of(self, routing_key: str) -> list[Seen]:
        """Messages with this routing key."""
        return [s for s in self.seen if s.routing_key == routing_key]

    async def wait_for(
        self, predicate: Callable[[list[Seen]], bool], timeout_s: float = DEADLINE_S
    ) -> list[Seen]:
        """Wait until the predicate holds for everything seen so far."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.seen):
            if time.monotonic() > deadline:
                kinds = [s.routing_key for s in self.seen]
                raise AssertionError(f"timed out after {timeout_s}s; seen {kinds}")
            await asyncio.sleep(0.02)
        return self.seen

    async def close(self) -> None:
        """Disconnect (the exclusive queue goes with it)."""
        with contextlib.suppress(Exception):
            await self.connection.close()


async def next_message(queue: AbstractQueue) -> AbstractIncomingMessage:
    """The next message the queue hands out (not acked), once there is one."""
    got: list[AbstractIncomingMessage] = []

    async def fetched() -> bool:
        message = await queue.get(fail=False)
        if message is not None:
            got.append(message)
        return bool(got)

    await until(fetched, f"a message in {queue.name}")
    return got[0]


async def publish_raw(
    settings: Settings,
    body: bytes,
    routing_key: str = "call.create",
    **properties: Any,
) -> None:
    """Publish one request, confirmed, to `{prefix}.requests`."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.get_exchange(f"{settings.prefix}.requests", ensure=False)
        await exchange.publish(
            aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, **properties),
            routing_key=routing_key,
        )


async def publish_json(
    settings: Settings, body: Any, routing_key: str = "call.create", **properties: Any
) -> None:
    """Publish one JSON request."""
    properties.setdefault("content_type", "application/json")
    await publish_raw(settings, json.dumps(body).encode(), routing_key, **properties)


async def queue_depth(settings: Settings, name: str) -> int:
    """Messages ready in a queue (passive declare)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)


async def drain(
    settings: Settings, name: str, timeout_s: float = 5.0
) -> list[AbstractIncomingMessage]:
    """Get (and ack) every message in a queue."""
    out: list[AbstractIncomingMessage] = []
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(name, ensure=False)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await message.ack()
            out.append(message)
    return out


def _pika_publish(url: str, exchange: str, routing_key: str, body: bytes, props: Any) -> None:
    import pika  # noqa: PLC0415 - only this helper needs a second client library

    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, routing_key, body, props, mandatory=True)
    finally:
        connection.close()


async def publish_without_message_id(
    settings: Settings, body: bytes, routing_key: str = "call.create"
) -> None:
    """Publish with no message_id at all (aiormq always invents one, so this uses pika)."""
    import pika  # noqa: PLC0415 - only this helper needs a second client library

    props = pika.BasicProperties(content_type="application/json", delivery_mode=2)
    await asyncio.to_thread(
        _pika_publish,
        settings.amqp_url.get_secret_value(),
        f"{settings.prefix}.requests",
        routing_key,
        body,
        props,
    )


async def publish_with_raw_properties(
    settings: Settings, body: bytes, routing_key: str = "call.create", **properties: Any
) -> None:
    """Publish with AMQP properties written as given: bytes that are not UTF-8, a timestamp
    in microseconds (legal on the wire; aio-pika refuses to send them, pika does not)."""
    import pika  # noqa: PLC0415 - only this helper needs a second client library

    props = pika.BasicProperties(content_type="application/json", delivery_mode=2, **properties)
    await asyncio.to_thread(
        _pika_publish,
        settings.amqp_url.get_secret_value(),
        f"{settings.prefix}.requests",
        routing_key,
        body,
        props,
    )
