"""Batches: Bland API requests per 1,000 calls in each dispatch mode, and intake of a big batch.

    python -m bench.batches [--calls 1000] [--recipients 10000]

Each row runs `dialer serve` against a zero-latency sandbox and counts the service's own
`POST /v1/calls` and `POST /v2/batches/create` requests (its /metrics) until every call is
queued. The baseline is 1,000 single `call.create` requests, one POST each, in the same run.
The last rows time one `batch.create` of 10,000 recipients (the seed's shape) from publish to
`batch.accepted`, next to raw aio-pika publishing and consuming the same message.
`make bench` runs it as its "batches" rows (bench/suite.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika

from bench.common import Run, counter, numbers, publish
from bench.rig import Rig, Service
from service.bus.connection import broker_answers

SEED = Path(__file__).parents[1] / "schemas" / "examples" / "renewal-reminder-batch.json"
# Fictional numbers have no time zone and repeat: no calling window, region rule or cap.
OPEN_LIMITS = {
    "DIALER_LOG_LEVEL": "WARNING",
    "DIALER_CALLING_WINDOW": "00:00-24:00",
    "DIALER_REGION_RULES": "{}",
    "DIALER_MAX_CALLS_PER_NUMBER_24H": "0",
    "DIALER_SAME_NUMBER_GAP_S": "0",
}
CREATE_CALL = 'endpoint="create_call"'
CREATE_BATCH = 'endpoint="create_batch"'


@dataclass(frozen=True)
class Row:
    """One scenario: what it sent to Bland and how long it took."""

    name: str
    calls: int
    create_call: float
    create_batch: float
    seconds: float
    cpu_s: float | None = None
    peak_rss_mib: float | None = None

    @property
    def per_1000(self) -> float:
        """Bland API requests per 1,000 calls."""
        return (self.create_call + self.create_batch) * 1000 / max(1, self.calls)


def seed_batch(count: int, dispatch: str | None = None) -> bytes:
    """The seed's batch with `count` recipients on fictional numbers."""
    body = json.loads(SEED.read_text())
    template = body["call_data"][0]
    body["call_data"] = [
        {**template, "name": f"Person {i}", "phone_number": number}
        for i, number in enumerate(numbers(count))
    ]
    if dispatch is not None:
        body["dialer"] = {"dispatch": dispatch}
    return json.dumps(body).encode()


def singles(count: int) -> list[bytes]:
    """`count` single call.create bodies with the same settings."""
    return [json.dumps({"phone_number": n, "task": "Bench call.", "voice": "June"}).encode() for n in numbers(count)]  # fmt: skip


Publish = Callable[[str, str], Awaitable[None]]  # (amqp url, requests exchange)
Done = Callable[[str], bool]  # metrics text -> finished


@dataclass(frozen=True)
class Ended:
    """How one service's scenario ended: its metrics, the seconds and what it cost."""

    metrics: str
    seconds: float
    cpu_s: float | None
    peak_rss_mib: float | None


async def scenario(rig: Rig, name: str, env: dict[str, str], send: Publish, done: Done) -> Ended:
    """Run one service until `done`; its final metrics, the seconds and CPU from the publish."""
    service = Service(rig, "sqlite", name, {**OPEN_LIMITS, **env})
    try:
        await service.prepare()
        service.start()
        await service.wait_path("/readyz")
        cpu_before, started = service.cpu_s(), time.perf_counter()
        await send(rig.amqp_url, service.names.requests)
        while not done(text := await service.metrics()):
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"{name}: not done after 600 s")
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - started
        cpu_after, peak = service.cpu_s(), service.peak_rss_mib()
    finally:
        await service.close()
    cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    return Ended(text, seconds, cpu, peak)


def dialed(count: int) -> Done:
    """Finished when `count` calls are queued at Bland."""
    return lambda text: counter(text, "dialer_calls_dialed_total", 'result="queued"') >= count


async def api_row(rig: Rig, calls: int, name: str, env: dict[str, str], send: Publish) -> Row:
    """Bland API requests of one way to place `calls` calls."""
    ended = await scenario(rig, name, env, send, dialed(calls))
    name_of = "dialer_bland_request_seconds_count"
    return Row(
        name,
        calls,
        counter(ended.metrics, name_of, CREATE_CALL),
        counter(ended.metrics, name_of, CREATE_BATCH),
        ended.seconds,
        ended.cpu_s,
        ended.peak_rss_mib,
    )


def publisher(bodies: list[bytes], kind: str) -> Publish:
    """Publish these bodies with routing key `kind`."""

    async def send(url: str, exchange: str) -> None:
        await publish(url, exchange, kind, bodies)

    return send


async def raw_round_trip(url: str, body: bytes) -> float:
    """Raw aio-pika: publish one message (confirmed) and consume + ack it; seconds."""
    name = f"bench-batches-{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        got = asyncio.Event()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            json.loads(message.body)
            await message.ack()
            got.set()

        tag = await queue.consume(on_message)
        started = time.perf_counter()
        await publish(url, "", name, [body])
        await got.wait()
        seconds = time.perf_counter() - started
        await queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    return seconds


@dataclass(frozen=True)
class Figures:
    """Every row and the intake of one big batch against raw aio-pika."""

    rows: list[Row]
    recipients: int
    size_bytes: int
    intake: Ended
    raw_s: float


async def measure(rig: Rig, calls: int, recipients: int) -> Figures:
    """Every row, one after the other, on the rig's broker and sandbox."""
    rows = await api_rows(rig, calls)
    body = seed_batch(recipients)
    accepted = 'kind="batch.create",outcome="accepted"'
    intake = await scenario(
        rig, "intake", {"DIALER_MAX_CONCURRENT_CALLS": "1"},
        publisher([body], "batch.create"),
        lambda text: counter(text, "dialer_requests_consumed_total", accepted) >= 1,
    )  # fmt: skip
    raw_s = await raw_round_trip(rig.amqp_url, body)
    return Figures(rows, recipients, len(body), intake, raw_s)


async def run(args: argparse.Namespace) -> int:
    """The standalone command: its own sandbox, every row, the table."""
    if not await broker_answers(args.amqp_url):
        print(f"bench: no broker at {args.amqp_url}", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="dialer-bench-batches-"))
    rig = Rig.start(args.amqp_url, args.postgres_url, directory, profile=False)
    try:
        figures = await measure(rig, args.calls, args.recipients)
    finally:
        rig.stop()
    report(figures)
    return 0


async def api_rows(rig: Rig, calls: int) -> list[Row]:
    """The baseline and each way of placing `calls` calls."""
    big = {"DIALER_DISPATCH_BATCH_SIZE": "1000", "DIALER_BLAND_POOL_SIZE": "1000",
           "DIALER_BLAND_BATCH_CHUNK": str(max(calls, 500))}  # fmt: skip
    return [
        await api_row(rig, calls, "single call.create (baseline)", {}, publisher(singles(calls), "call.create")),
        await api_row(rig, calls, "batch.create, expand", {}, publisher([seed_batch(calls)], "batch.create")),
        await api_row(
            rig, calls, "batch.create, bland (32 per round)", {"DIALER_BATCH_DISPATCH": "bland"},
            publisher([seed_batch(calls)], "batch.create"),
        ),
        await api_row(
            rig, calls, "batch.create, bland (big rounds)", {"DIALER_BATCH_DISPATCH": "bland", **big},
            publisher([seed_batch(calls)], "batch.create"),
        ),
        await api_row(
            rig, calls, "single call.create, coalesced 0.2 s", {"DIALER_COALESCE_WINDOW_S": "0.2", **big},
            publisher(singles(calls), "call.create"),
        ),
    ]  # fmt: skip


def report(figures: Figures) -> None:
    """The table, as ratios to the baseline row."""
    rows, recipients, size = figures.rows, figures.recipients, figures.size_bytes
    intake_s, raw_s = figures.intake.seconds, figures.raw_s
    base = rows[0].per_1000
    print(f"{'way':38} {'calls':>6} {'/v1/calls':>10} {'/v2/batches':>12} {'per 1,000':>10} {'vs base':>8}")  # fmt: skip
    for row in rows:
        print(
            f"{row.name:38} {row.calls:6d} {row.create_call:10.0f} {row.create_batch:12.0f} "
            f"{row.per_1000:10.1f} {row.per_1000 / base:8.1%}"
        )
    print(f"\nbatch.create of {recipients} recipients ({size / 1024:.0f} KiB):")
    print(f"  publish -> batch.accepted (service)  {intake_s:7.2f} s")
    print(f"  publish -> consumed (raw aio-pika)   {raw_s:7.2f} s")
    print(f"  service / raw                        {intake_s / raw_s:7.1f}x")
    print("  (the service's time includes /metrics polling every 20 ms)")


def as_runs(figures: Figures) -> list[Run]:
    """Rows of `make bench`: calls per second, API requests per 1,000 against the baseline."""
    base = figures.rows[0].per_1000
    out = []
    for row in figures.rows:
        summary = (
            f"{row.calls / row.seconds:,.0f} calls/s; {row.per_1000:,.0f} API requests "
            f"per 1,000 calls ({row.per_1000 / base * 100:.1f} % of single)"
        )
        extra: dict[str, Any] = {"create_call": row.create_call, "create_batch": row.create_batch}
        extra.update(api_requests_per_1000=row.per_1000, summary=summary)
        name = f"batches: {row.name}"
        out.append(Run(name, row.calls, row.seconds, row.cpu_s, row.peak_rss_mib, extra))
    intake, raw_s = figures.intake, figures.raw_s
    summary = (
        f"{figures.recipients / intake.seconds:,.0f} recipients/s; publish -> batch.accepted "
        f"{intake.seconds:.2f} s, raw aio-pika {raw_s:.2f} s ({intake.seconds / raw_s:.0f}x)"
    )
    extra = {"size_bytes": figures.size_bytes, "intake_s": intake.seconds, "raw_s": raw_s}
    extra["summary"] = summary
    kib = figures.size_bytes / 1024
    name = f"batches: batch.create of {figures.recipients:,} recipients ({kib:,.0f} KiB)"
    out.append(
        Run(name, figures.recipients, intake.seconds, intake.cpu_s, intake.peak_rss_mib, extra)
    )
    return out


def main() -> int:
    """Parse options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.batches", description=__doc__)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--recipients", type=int, default=10_000)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument(
        "--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
