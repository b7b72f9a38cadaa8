"""`dialer dead-letters list|replay`: what could not be processed, and sending it back."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import TextIO

import aio_pika

from service.bus.connection import Names, cli_settings
from service.bus.dead_letters import describe, original_routing_key, replay_message
from service.bus.topology import declare
from service.settings import Settings


async def list_dead(settings: Settings, limit: int, out: TextIO, *, as_json: bool) -> int:
    """Print up to `limit` dead letters; they stay in the queue (held unacked, then returned)."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        queue = (await declare(channel, settings)).dead_queue
        count = 0
        while count < limit and (message := await queue.get(no_ack=False, fail=False)) is not None:
            count += 1
            item = describe(message)
            if as_json:
                out.write(json.dumps(asdict(item)) + "\n")
            else:
                error = f" error={item.error}" if item.error else ""
                out.write(
                    f"{count}\treason={item.reason} request_id={item.request_id} "
                    f"routing_key={item.routing_key} bytes={item.size} replays={item.replays}{error}\n"
                )
    # Closing the connection returns every held message to the queue, in order.
    return count


async def replay(settings: Settings, limit: int | None, reason: str | None, out: TextIO) -> int:
    """Republish dead letters to the requests exchange (confirmed), then ack them."""
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    replayed = 0
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        topology = await declare(channel, settings)
        # Only what is there now: a message that dies again must not be replayed in a loop.
        waiting = int(topology.dead_queue.declaration_result.message_count or 0)
        budget = waiting if limit is None else min(limit, waiting)
        for _ in range(waiting):
            if replayed >= budget:
                break
            message = await topology.dead_queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if reason is not None and describe(message).reason != reason:
                continue  # held unacked; returned to the queue when the connection closes
            await topology.requests_exchange.publish(
                replay_message(message), routing_key=original_routing_key(message)
            )
            await message.ack()
            replayed += 1
    out.write(f"replayed {replayed} to {Names(settings.prefix).requests}\n")
    return replayed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`dialer dead-letters list|replay`."""
    parser.add_argument("action", choices=("list", "replay"))
    parser.add_argument("--limit", type=int, help="at most N messages (list: default 100)")
    parser.add_argument("--reason", help="replay: only dead letters with this reason")
    parser.add_argument("--json", action="store_true", help="list: one JSON object per line")
    parser.add_argument("--amqp-url", help="default: DIALER_AMQP_URL")
    parser.add_argument("--prefix", help="default: DIALER_PREFIX")


def run(args: argparse.Namespace) -> int:
    """List or replay."""
    settings = cli_settings(args)
    if args.action == "list":
        asyncio.run(list_dead(settings, args.limit or 100, sys.stdout, as_json=args.json))
    else:
        asyncio.run(replay(settings, args.limit, args.reason, sys.stdout))
    return 0
