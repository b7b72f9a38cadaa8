"""Exchanges and queues of the contract, declared idempotently; `dialer topology`."""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from service.amqp import Names, cli_settings, connect
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dialer topology` takes its settings from DIALER_* variables."""
    parser.add_argument("--prefix", help="name prefix (default: DIALER_PREFIX or `dialer`)")
    parser.add_argument("--amqp-url", help="default: DIALER_AMQP_URL")


def run(args: argparse.Namespace) -> int:
    """Declare the exchanges and queues and print their names."""
    settings = cli_settings(args)
    names = asyncio.run(declare_once(settings))
    print(f"exchange {names.requests} (topic) -> quorum queue {names.requests} [#]")
    print(f"exchange {names.events} (topic)")
    print(f"exchange {names.dead} (topic) -> quorum queue {names.dead} [#]")
    return 0
