"""The measured variants: baselines, ingest, end to end, latency, backlog, webhooks."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import httpx

from bench.common import Run, bodies, cpu_seconds, percentile, publish
from bench.rig import SCRAPE_S, Rig, Service, delete_queue, wait_until
from sandbox.webhooks import SIGNATURE_HEADER, encode, sign

FAR_FUTURE = "2100-01-01T00:00:00Z"
DRAIN_TIMEOUT_S = 1800.0
WEBHOOK_CLIENTS = 16


# ------------------------------------------------------------------ baselines


async def baseline(rig: Rig, mode: str, count: int) -> Run:
    """Baseline A (`raw`) or B (`naive`) draining a preloaded quorum queue in its own process."""
    queue = f"bench-{mode}-{uuid.uuid4().hex[:8]}"
    events = f"{queue}.events"
    connection = await aio_pika.connect(rig.amqp_url)
    async with connection:
        channel = await connection.channel()
        for name in (queue, events):
            await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        await publish(rig.amqp_url, "", queue, bodies(count))
        argv = [sys.executable, "-m", "bench.baselines", mode, "--amqp-url", rig.amqp_url]
        argv += ["--queue", queue, "--count", str(count), "--events-queue", events]
        argv += ["--bland-url", rig.sandbox.base_url, "--api-key", rig.api_key]
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, check=True, timeout=DRAIN_TIMEOUT_S
        )
        figures = json.loads(done.stdout.decode().strip().splitlines()[-1])
    finally:
        await delete_queue(rig.amqp_url, queue)
        await delete_queue(rig.amqp_url, events)
    name = "A raw aio-pika drain" if mode == "raw" else "B naive pipeline"
    return Run(name, count, figures["seconds"], figures["cpu_s"], figures["peak_rss_mib"])


# ------------------------------------------------------------------ drains of a preloaded queue


async def drain(
    rig: Rig,
    database: str,
    count: int,
    *,
    dial: bool,
    code_dir: Path | None = None,
    replicas: int = 1,
) -> Run:
    """Preload `count` requests, start the service, time it to the last accept or call.queued.

    Ingest-only requests carry a far `not_before`: consumed, validated, committed, acked, and
    never due. With `replicas` > 1, that many processes share the queue and the database; CPU
    is their sum, peak RSS their largest.
    """
    kind = "end to end" if dial else "ingest"
    service = Service(rig, database, f"{kind.replace(' ', '-')}-{database}", code_dir=code_dir)
    processes = [service]
    try:
        await service.prepare()
        processes += [service.replica(n) for n in range(1, replicas)]
        if dial:
            await service.bind_events()
        options = None if dial else {"not_before": FAR_FUTURE}
        await publish(rig.amqp_url, service.names.requests, "call.create", bodies(count, options))
        for process in processes:
            process.start()
        for process in processes:
            await process.wait_path("/metrics")
        cpu_before, started = _cpu(processes), time.perf_counter()

        async def progress() -> float:
            done = [p.published("call.queued") if dial else p.accepted() for p in processes]
            return sum(await asyncio.gather(*done))

        finished = await wait_until(progress, count, DRAIN_TIMEOUT_S, service.name)
        cpu_after = _cpu(processes)
        peaks = [p.peak_rss_mib() for p in processes]
    finally:
        for process in reversed(processes):
            await process.close()
    cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    peak = max((p for p in peaks if p is not None), default=None)
    name = f"ours {kind}, {label(database)}"
    name += f", {replicas} processes" if replicas > 1 else ""
    name += " (before)" if code_dir else ""
    return Run(name, count, finished - started, cpu, peak)


def _cpu(processes: list[Service]) -> float | None:
    """The processes' CPU seconds so far (None if one cannot be read)."""
    seconds = [p.cpu_s() for p in processes]
    return None if None in seconds else sum(s for s in seconds if s is not None)


def label(database: str) -> str:
    """The database's name in the table."""
    return "SQLite" if database == "sqlite" else "PostgreSQL"


# ------------------------------------------------------------------ latency, open loop


async def latency(
    rig: Rig, database: str, rate: float, seconds: float, code_dir: Path | None = None
) -> Run:
    """Publish at `rate`/s on a schedule (open loop); publish → `call.queued` at the broker."""
    service = Service(rig, database, f"latency-{database}-{rate:g}", code_dir=code_dir)
    count = max(1, int(rate * seconds))
    sent: dict[str, float] = {}
    received: dict[str, float] = {}
    done = asyncio.Event()
    try:
        await service.prepare()
        await service.bind_events("call.queued")
        service.start()
        await service.wait_path("/readyz")
        connection = await aio_pika.connect(rig.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            tap = await channel.get_queue(service.events_queue, ensure=False)

            async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                request_id = json.loads(message.body).get("request_id")
                received.setdefault(request_id, time.perf_counter())
                await message.ack()
                if len(received) >= count:
                    done.set()

            await tap.consume(on_event)
            exchange = await channel.get_exchange(service.names.requests, ensure=False)
            cpu_before = service.cpu_s()
            confirms = await open_loop(exchange, rate, count, sent)
            await asyncio.wait_for(done.wait(), timeout=120 + seconds)
            await confirms
            cpu_after, peak = service.cpu_s(), service.peak_rss_mib()
    finally:
        await service.close()
    waits_ms = [(received[k] - sent[k]) * 1000 for k in sent if k in received]
    cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    name = f"dial latency at {rate:g}/s, {label(database)}" + (" (before)" if code_dir else "")
    extra = {"p50_ms": percentile(waits_ms, 0.5), "p99_ms": percentile(waits_ms, 0.99)}
    return Run(name, count, seconds, cpu, peak, extra)


async def open_loop(
    exchange: aio_pika.abc.AbstractExchange, rate: float, count: int, sent: dict[str, float]
) -> asyncio.Future[Any]:
    """Publish `count` requests on a fixed schedule; the confirms, gathered."""
    payloads = bodies(count)
    pending = []
    start = time.perf_counter()
    for i, body in enumerate(payloads):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        request_id = uuid.uuid4().hex
        sent[request_id] = time.perf_counter()
        message = aio_pika.Message(
            body,
            message_id=request_id,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        pending.append(asyncio.ensure_future(exchange.publish(message, "call.create")))
    return asyncio.gather(*pending)


# ------------------------------------------------------------------ backlog: memory, cost


async def backlog(rig: Rig, database: str, count: int, ingest_per_s: float) -> Run:
    """Memory at start, after `count` requests are ingested and after they drain; CPU per
    request while `pending` is at 100k, 10k and 1k.

    The requests become due together once all are expected in (from the ingest rate).
    """
    service = Service(rig, database, f"backlog-{database}")
    due_in_s = count / max(50.0, 0.6 * ingest_per_s) + 3.0
    samples: list[tuple[float, float]] = []  # (dialed, cpu_s)
    try:
        await service.prepare()
        await service.bind_events("call.completed")  # nothing: events are routed nowhere
        service.start()
        await service.wait_path("/readyz")
        rss_start = service.rss_mib()
        not_before = datetime.now(UTC) + timedelta(seconds=due_in_s)
        options = {"not_before": not_before.isoformat()}
        started = time.perf_counter()
        await publish(rig.amqp_url, service.names.requests, "call.create", bodies(count, options))
        await wait_until(service.accepted, count, DRAIN_TIMEOUT_S, service.name)
        ingested_early = datetime.now(UTC) < not_before
        rss_ingested = service.rss_mib()
        dialed = 0.0
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while dialed < count and time.monotonic() < deadline:
            dialed = await service.published("call.queued")
            samples.append((dialed, service.cpu_s() or 0.0))
            await asyncio.sleep(SCRAPE_S)
        seconds = time.perf_counter() - started
        rss_drained, peak = service.rss_mib(), service.peak_rss_mib()
    finally:
        await service.close()
    extra: dict[str, Any] = {
        "rss_start_mib": rss_start,
        "rss_after_ingest_mib": rss_ingested,
        "rss_after_drain_mib": rss_drained,
        "ingested_before_due": ingested_early,
        "cpu_ms_per_request_at_pending": cost_at_levels(samples, count),
    }
    return Run(f"backlog of {count:,}, {label(database)}", count, seconds, None, peak, extra)


def cost_at_levels(samples: list[tuple[float, float]], count: int) -> dict[str, float]:
    """CPU ms per dialed request while `pending` falls from each level by a tenth (min 500)."""
    out: dict[str, float] = {}
    for level in (1_000, 10_000, 100_000):
        if level > count:
            continue
        first, last = count - level, count - level + max(500, level // 10)
        inside = [s for s in samples if first <= s[0] <= last]
        if len(inside) < 2:
            before = [s for s in samples if s[0] <= first] or samples[:1]
            after = [s for s in samples if s[0] >= last] or samples[-1:]
            inside = [before[-1], after[0]]
        (d0, c0), (d1, c1) = inside[0], inside[-1]
        if d1 > d0:
            out[f"{level}"] = (c1 - c0) * 1000 / (d1 - d0)
    return out


# ------------------------------------------------------------------ webhook intake


async def webhooks(rig: Rig, database: str, count: int) -> Run:
    """Signed `completed` webhooks for `count` queued calls, 16 clients; to `call.completed`."""
    service = Service(rig, database, f"webhooks-{database}")
    try:
        await service.prepare()
        await service.bind_events()
        service.start()
        await service.wait_path("/readyz")
        ids = await publish(rig.amqp_url, service.names.requests, "call.create", bodies(count))
        await wait_until(lambda: service.published("call.queued"), count, DRAIN_TIMEOUT_S, "dial")
        payloads = await completed_payloads(rig, set(ids))
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for payload in payloads:
            queue.put_nowait(encode(payload))
        cpu_before = cpu_seconds(service.pid)
        started = time.perf_counter()
        async with httpx.AsyncClient(base_url=service.base_url, timeout=30) as client:

            async def worker() -> None:
                while not queue.empty():
                    raw = queue.get_nowait()
                    headers = {SIGNATURE_HEADER: sign(rig.webhook_secret, raw)}
                    headers["Content-Type"] = "application/json"
                    answer = await client.post("/webhooks/bland", content=raw, headers=headers)
                    answer.raise_for_status()

            await asyncio.gather(*(worker() for _ in range(WEBHOOK_CLIENTS)))
        probe = lambda: service.published("call.completed")  # noqa: E731 - a one-line probe
        finished = await wait_until(probe, len(payloads), DRAIN_TIMEOUT_S, "webhooks")
        cpu_after, peak = cpu_seconds(service.pid), service.peak_rss_mib()
    finally:
        await service.close()
    cpu = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    name = f"webhook intake, {label(database)}"
    return Run(name, len(payloads), finished - started, cpu, peak)


async def completed_payloads(rig: Rig, request_ids: set[str]) -> list[dict[str, Any]]:
    """A post-call `completed` body for each call the sandbox holds for these requests."""
    async with httpx.AsyncClient(base_url=rig.sandbox.base_url, timeout=60) as client:
        calls = (await client.get("/_sandbox/calls")).json()["calls"]
    out = []
    for call in calls:
        metadata = call.get("metadata") or {}
        if metadata.get("dialer_request_id") not in request_ids:
            continue
        out.append(
            {
                "call_id": call["call_id"],
                "completed": True,
                "status": "completed",
                "queue_status": "complete",
                "answered_by": "human",
                "call_length": 1.5,
                "corrected_duration": 90,
                "summary": "Benchmark call answered.",
                "metadata": metadata,
            }
        )
    return out
