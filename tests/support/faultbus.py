"""The fault suite's side of the bus: a recorder of events that survives broker restarts, a
publisher that rides out broker outages, and readers of the dead-letter queue.

Only the contract's names are used (`{prefix}.requests`, `{prefix}.events`, `{prefix}.dead`);
nothing is imported from the service. The recorder reads a durable quorum queue it declares
before the service starts, so no event is unroutable while a fault has the recorder
disconnected: it reconnects and drains what waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from tests.support.tally import FINAL_EVENTS

RECONNECT_S = 0.5
QUORUM = {"x-queue-type": "quorum"}
BROKER_FAILURES: tuple[type[BaseException], ...] = (
    aio_pika.exceptions.AMQPError,
    aio_pika.exceptions.ChannelInvalidStateError,
    ConnectionError,
    OSError,
    TimeoutError,
    RuntimeError,
)


def with_query(url: str, **params: object) -> str:
    """The URL with query parameters appended (aio-pika reads e.g. reconnect_interval there)."""
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return url + ("&" if "?" in url else "?") + query


@dataclass(frozen=True)
class Event:
    """One event as the recorder received it."""

    event_id: str
    type: str
    request_id: str | None
    body: dict[str, Any]
    at: float  # time.monotonic() on arrival
    wall: float  # time.time() on arrival (to compare with the sandbox's UTC timestamps)
    via: str  # "events" (the exchange) or "reply_to"
    redelivered: bool = False


@dataclass
class EventRecorder:
    """Consumes `{prefix}.tally` (bound to `{prefix}.events`, `#`) and a reply queue; dedupes
    on the event id (events are at-least-once)."""

    url: str
    prefix: str
    events: dict[str, Event] = field(default_factory=dict)
    copies: int = 0  # deliveries, duplicates included
    _connection: AbstractRobustConnection | None = None
    _channel: aio_pika.abc.AbstractRobustChannel | None = None

    @property
    def tally_queue(self) -> str:
        """The recorder's queue on the events exchange."""
        return f"{self.prefix}.tally"

    @property
    def reply_queue(self) -> str:
        """A queue requests can name in `reply_to`."""
        return f"{self.prefix}.replies"

    async def start(self, *, bind: bool = True) -> EventRecorder:
        """Declare the events exchange, the recorder's queues (bound unless told not to), consume."""
        self._connection = await aio_pika.connect_robust(
            self.url,
            reconnect_interval=RECONNECT_S,
            client_properties={"connection_name": "faults/recorder"},
        )
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=500)
        self._channel = channel
        # Same arguments as the service's declaration (contract: durable topic exchange).
        await channel.declare_exchange(
            f"{self.prefix}.events", aio_pika.ExchangeType.TOPIC, durable=True
        )
        tally = await channel.declare_queue(self.tally_queue, durable=True, arguments=QUORUM)
        if bind:
            await tally.bind(f"{self.prefix}.events", "#")
        replies = await channel.declare_queue(self.reply_queue, durable=True, arguments=QUORUM)
        await tally.consume(self._on_event, no_ack=False)
        await replies.consume(self._on_reply, no_ack=False)
        return self

    async def bind(self) -> None:
        """Bind the recorder's queue to the events exchange now (it was started unbound)."""
        if self._channel is None:
            raise RuntimeError("start() first")
        queue = await self._channel.get_queue(self.tally_queue, ensure=False)
        await queue.bind(f"{self.prefix}.events", "#")

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        await self._record(message, "events")

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        await self._record(message, "reply_to")

    async def _record(self, message: AbstractIncomingMessage, via: str) -> None:
        self.copies += 1
        try:
            body = json.loads(message.body)
        except ValueError:
            body = {"unparsable": message.body[:200].decode(errors="replace")}
        event_id = message.message_id or f"no-id-{self.copies}"
        if event_id not in self.events:
            self.events[event_id] = Event(
                event_id=event_id,
                type=message.type or message.routing_key or "",
                request_id=body.get("request_id") if isinstance(body, dict) else None,
                body=body if isinstance(body, dict) else {"value": body},
                at=time.monotonic(),
                wall=time.time(),
                via=via,
                redelivered=bool(message.redelivered),
            )
        with contextlib.suppress(*BROKER_FAILURES):
            await message.ack()

    # ------------------------------------------------------------ views

    def of(self, *types: str) -> list[Event]:
        """Events of these types, in arrival order."""
        wanted = set(types)
        return [e for e in self.events.values() if e.type in wanted]

    def finals(self) -> dict[str, set[str]]:
        """Request id -> the final event types seen for it."""
        out: dict[str, set[str]] = {}
        for event in self.events.values():
            if event.type in FINAL_EVENTS and event.request_id is not None:
                out.setdefault(event.request_id, set()).add(event.type)
        return out

    def first(self, event_type: str) -> dict[str, Event]:
        """Request id -> the first event of this type."""
        out: dict[str, Event] = {}
        for event in self.events.values():
            if event.type == event_type and event.request_id is not None:
                out.setdefault(event.request_id, event)
        return out

    def settled(self, request_ids: Iterable[str]) -> bool:
        """True when every id has a final event."""
        finals = self.finals()
        return all(rid in finals for rid in request_ids)

    async def close(self) -> None:
        """Disconnect (the queues are deleted with the scenario's names)."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._connection.close(), 10)


@dataclass(frozen=True)
class Request:
    """One request to publish: id, body, routing key, extra AMQP properties."""

    request_id: str
    body: bytes
    routing_key: str = "call.create"
    properties: dict[str, Any] = field(default_factory=dict)
    phone_number: str | None = None


class Publisher:
    """Confirmed publishing to `{prefix}.requests` that retries through broker outages.

    A publish whose confirm was lost is sent again with the same message_id: the service
    dedupes on the request id, which is the contract for publishers.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.confirmed: list[str] = []
        self.retries = 0
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._exchange: aio_pika.abc.AbstractExchange | None = None

    async def _exchange_now(self, deadline: float) -> aio_pika.abc.AbstractExchange:
        while self._exchange is None:
            try:
                self._connection = await aio_pika.connect(self.url, timeout=5)
                channel = await self._connection.channel(
                    publisher_confirms=True, on_return_raises=True
                )
                self._exchange = await channel.get_exchange(f"{self.prefix}.requests", ensure=False)
            except BROKER_FAILURES:
                await self._drop()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)  # poll interval while the broker is unreachable
        return self._exchange

    async def _drop(self) -> None:
        connection, self._connection, self._exchange = self._connection, None, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)

    async def publish(self, requests: Sequence[Request], *, timeout_s: float = 120.0) -> None:
        """Publish all, confirmed; retry the unconfirmed ones until `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        todo = list(requests)
        while todo:
            exchange = await self._exchange_now(deadline)
            results = await asyncio.gather(
                *(self._one(exchange, request) for request in todo), return_exceptions=True
            )
            failed = [
                r for r, res in zip(todo, results, strict=True) if isinstance(res, BaseException)
            ]
            self.confirmed += [
                r.request_id for r, res in zip(todo, results, strict=True) if res is None
            ]
            if failed:
                errors = [res for res in results if isinstance(res, BaseException)]
                if not all(isinstance(e, BROKER_FAILURES) for e in errors):
                    raise next(e for e in errors if not isinstance(e, BROKER_FAILURES))
                self.retries += len(failed)
                await self._drop()
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(failed)} requests unconfirmed after {timeout_s} s")
            todo = failed

    async def _one(self, exchange: aio_pika.abc.AbstractExchange, request: Request) -> None:
        properties = {"content_type": "application/json", **request.properties}
        await exchange.publish(
            aio_pika.Message(
                request.body,
                message_id=request.request_id,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                **properties,
            ),
            routing_key=request.routing_key,
            timeout=10,
        )

    async def paced(self, requests: Sequence[Request], per_second: float, chunk: int = 25) -> None:
        """Publish in chunks at about `per_second` (a load, spread over time)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        for index in range(0, len(requests), chunk):
            due = started + index / per_second
            if due > loop.time():
                await asyncio.sleep(due - loop.time())  # pacing the load, not waiting on state
            await self.publish(requests[index : index + chunk])

    async def close(self) -> None:
        """Disconnect."""
        await self._drop()


async def queue_depth(url: str, name: str) -> int:
    """Messages ready in a queue (passive declare); -1 when it cannot be read now."""
    try:
        connection = await aio_pika.connect(url, timeout=5)
    except BROKER_FAILURES:
        return -1
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
    except BROKER_FAILURES:
        return -1
    finally:
        with contextlib.suppress(Exception):
            await connection.close()


def _read_queue_with_pika(url: str, name: str, limit: int) -> list[dict[str, Any]]:
    import pika  # noqa: PLC0415 - pika decodes odd properties without failing

    connection = pika.BlockingConnection(pika.URLParameters(url))
    out: list[dict[str, Any]] = []
    try:
        channel = connection.channel()
        while len(out) < limit:
            method, props, body = channel.basic_get(name, auto_ack=False)
            if method is None:
                break
            out.append(
                {
                    "headers": dict(props.headers or {}),
                    "message_id": props.message_id,
                    "correlation_id": props.correlation_id,
                    "timestamp": props.timestamp,
                    "routing_key": method.routing_key,
                    "body": body,
                }
            )
            channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()
    return out


async def read_queue(url: str, name: str, limit: int = 10_000) -> list[dict[str, Any]]:
    """Take every message of a queue (headers, ids, body) with pika, in a thread."""
    return await asyncio.to_thread(_read_queue_with_pika, url, name, limit)


async def delete_names(url: str, prefix: str, queues: Iterable[str]) -> None:
    """Delete a scenario's queues and exchanges (quorum queues: if_unused/if_empty off)."""
    try:
        connection = await aio_pika.connect(url, timeout=10)
    except BROKER_FAILURES:
        return
    async with connection:
        for name in queues:
            channel = await connection.channel()
            with contextlib.suppress(*BROKER_FAILURES):
                await channel.queue_delete(name, if_unused=False, if_empty=False)
        for suffix in ("requests", "events", "dead"):
            channel = await connection.channel()
            with contextlib.suppress(*BROKER_FAILURES):
                await channel.exchange_delete(f"{prefix}.{suffix}", if_unused=False)
