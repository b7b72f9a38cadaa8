"""The baselines, each drained in its own process: `python -m bench.baselines raw|naive ...`.

A  raw: aio-pika consume + ack of a preloaded quorum queue (the broker's ceiling here).
B  naive: the pipeline one would write first, and nothing more: aio-pika consume, pydantic
   validation, one httpx POST to the (sandbox) Bland, a confirmed publish of `call.queued`,
   ack. No ledger, no idempotency, no retries: a yardstick, not a design.

Prints one JSON line: count, seconds (from the first consume to the last ack), cpu_s and
peak_rss_mib of this process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

import aio_pika
import httpx
from aio_pika.abc import AbstractIncomingMessage
from pydantic import BaseModel

PREFETCH = 64


class CallRequest(BaseModel):
    """The naive pipeline's whole contract."""

    phone_number: str
    task: str


def process_cpu_s() -> float:
    """User + system CPU of this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drain(args: argparse.Namespace) -> dict[str, float]:
    """Consume `args.count` messages of `args.queue` the way `args.mode` says."""
    connection = await aio_pika.connect(args.amqp_url)
    client = httpx.AsyncClient(
        base_url=args.bland_url or "http://127.0.0.1:9",
        headers={"Authorization": args.api_key or ""},
        limits=httpx.Limits(max_connections=PREFETCH, max_keepalive_connections=PREFETCH),
    )
    done = asyncio.Event()
    seen = failed = 0
    async with connection, client:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=PREFETCH)
        queue = await channel.declare_queue(args.queue, passive=True)

        async def naive(message: AbstractIncomingMessage) -> None:
            request = CallRequest.model_validate_json(message.body)
            response = await client.post("/v1/calls", json=request.model_dump())
            response.raise_for_status()
            event = {"event_type": "call.queued", "call_id": response.json()["call_id"]}
            await channel.default_exchange.publish(
                aio_pika.Message(
                    json.dumps(event).encode(),
                    message_id=message.message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=args.events_queue,
            )

        async def on_message(message: AbstractIncomingMessage) -> None:
            nonlocal seen, failed
            try:
                await naive(message) if args.mode == "naive" else json.loads(message.body)
            except (httpx.HTTPError, aio_pika.exceptions.AMQPError):
                # Unacked, a failed message held its slot forever and the drain never ended.
                failed += 1
                await message.nack(requeue=True)
                return
            await message.ack()
            seen += 1
            if seen >= args.count:
                done.set()

        cpu_before = process_cpu_s()
        started = time.perf_counter()
        await queue.consume(on_message)
        await done.wait()
        seconds = time.perf_counter() - started
        cpu_s = process_cpu_s() - cpu_before
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {"count": seen, "seconds": seconds, "cpu_s": cpu_s, "peak_rss_mib": peak_mib}
    return {**figures, "failed_then_requeued": failed}


def main() -> int:
    """Parse, drain, print the figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__)
    parser.add_argument("mode", choices=["raw", "naive"])
    parser.add_argument("--amqp-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--bland-url")
    parser.add_argument("--api-key")
    parser.add_argument("--events-queue", default="")
    print(json.dumps(asyncio.run(drain(parser.parse_args()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
