"""Exchanges and queues of the contract, declared idempotently (and deleted, for demos)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from service.bus.connection import Names, connect
from service.errors import ConfigError
from service.settings import Settings


@dataclass(frozen=True)
class Topology:
    """The declared exchanges and queues."""

    requests_exchange: AbstractExchange
    requests_queue: AbstractQueue
    events_exchange: AbstractExchange
    dead_exchange: AbstractExchange
    dead_queue: AbstractQueue


def requests_queue_arguments(settings: Settings) -> dict[str, Any]:
    """Quorum queue with a delivery limit and at-least-once dead-lettering to `{p}.dead`."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": Names(settings.prefix).dead,
        # At-least-once dead-lettering needs reject-publish overflow (field-notes 1.6).
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare(channel: AbstractChannel, settings: Settings) -> Topology:
    """Declare everything; the dead-letter exchange first, since a missing DLX drops messages."""
    names = Names(settings.prefix)
    try:
        dead_exchange = await channel.declare_exchange(
            names.dead, aio_pika.ExchangeType.TOPIC, durable=True
        )
        dead_queue = await channel.declare_queue(
            names.dead, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await dead_queue.bind(dead_exchange, "#")
        requests_exchange = await channel.declare_exchange(
            names.requests, aio_pika.ExchangeType.TOPIC, durable=True
        )
        requests_queue = await channel.declare_queue(
            names.requests, durable=True, arguments=requests_queue_arguments(settings)
        )
        await requests_queue.bind(requests_exchange, "#")
        events_exchange = await channel.declare_exchange(
            names.events, aio_pika.ExchangeType.TOPIC, durable=True
        )
    except aio_pika.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigError(
            f"the broker already has {names.prefix}.* declared with other arguments ({exc}); "
            "DIALER_DELIVERY_LIMIT must match the existing queue, or delete the queue first"
        ) from exc
    return Topology(requests_exchange, requests_queue, events_exchange, dead_exchange, dead_queue)


async def declare_once(settings: Settings) -> Names:
    """Connect, declare, disconnect."""
    connection = await connect(settings, "topology")
    async with connection:
        await declare(await connection.channel(), settings)
    return Names(settings.prefix)


async def delete_topology(url: str, prefix: str) -> None:
    """Delete the queues and exchanges under `prefix` (each on its own channel: a miss closes one)."""
    names = Names(prefix)
    connection = await aio_pika.connect(url)
    async with connection:
        for queue in (names.requests, names.dead):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.queue_delete(queue, if_unused=False, if_empty=False)
        for exchange in (names.requests, names.events, names.dead):
            channel = await connection.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await channel.exchange_delete(exchange, if_unused=False)
