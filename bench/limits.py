"""Three `dialer serve` replicas on one PostgreSQL against a capped sandbox: limits as one.

    python -m bench.limits [--requests 2000] [--replicas 3] [--concurrency 10] [--rate 20]

The sandbox refuses (429) any call beyond `--concurrency` live calls; calls last 0.5-3 s.
Prints: the sandbox's highest concurrency and most calls started in any 1-second window
(violations: above the caps, 429s), the share of time the sandbox ran at the cap while
requests waited, the achieved rate against the configured rate and against the concurrency
bound (cap / mean call length: the baseline no limiter can beat), and the slot time lost
per call between one call's end and the next call's start (the limiter's added latency).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench.common import publish
from sandbox.process import Sandbox, free_port, start_sandbox
from service.bus.connection import broker_answers
from service.bus.topology import delete_topology

CLOCK_SPEED = 10.0  # simulated seconds per real second: 5-30 s talk is 0.5-3 s
MIN_TALK_S, MAX_TALK_S = 5.0, 30.0
SAMPLE_S = 0.02


@dataclass
class Samples:
    """What the poller saw: (backlog waiting, live calls at the sandbox) every SAMPLE_S."""

    waiting_at_cap: int = 0
    waiting: int = 0
    idle_slot_s: float = 0.0  # slot-seconds free while requests waited
    busy_slot_s: float = 0.0
    ledger_at_cap: int = 0  # samples in which the ledger's own slots were all taken


def sandbox_options(concurrency: int) -> list[str]:
    """A sandbox with Bland's concurrency cap (429 beyond it) and short human calls."""
    options = ["--plan", "enterprise", "--max-concurrent", str(concurrency)]
    options += ["--concurrency-mode", "reject", "--clock-speed", str(CLOCK_SPEED)]
    options += ["--queue-s", "0", "--ring-s", "0", "--share-human", "1"]
    options += ["--share-voicemail", "0", "--share-no-answer", "0", "--share-busy", "0"]
    options += ["--share-failed", "0", "--min-talk-s", str(MIN_TALK_S)]
    options += ["--max-talk-s", str(MAX_TALK_S), "--seed", "8"]
    return options


async def create_database(base_url: str) -> tuple[str, str]:
    """A fresh database on the PostgreSQL server: (its SQLAlchemy URL, its name)."""
    name = f"bench_limits_{uuid.uuid4().hex[:8]}"
    await _admin(base_url, f'CREATE DATABASE "{name}"')
    return urlsplit(base_url)._replace(path=f"/{name}").geturl(), name


async def _connect(base_url: str, database: str) -> asyncpg.Connection:
    parts = urlsplit(base_url.replace("postgresql+asyncpg", "postgresql"))
    return await asyncpg.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
        password=parts.password, database=database,
    )  # fmt: skip


async def _admin(base_url: str, sql: str) -> None:
    conn = await _connect(base_url, "postgres")
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def replica_env(
    args: argparse.Namespace,
    sandbox: Sandbox,
    database_url: str,
    prefix: str,
    keys: tuple[str, str],
) -> dict[str, str]:
    """One replica's settings: the caps under test, any hour, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    port = free_port()
    env.update(
        DIALER_AMQP_URL=args.amqp_url,
        DIALER_PREFIX=prefix,
        DIALER_DATABASE_URL=database_url,
        DIALER_DATABASE_POOL_SIZE="5",
        DIALER_BLAND_BASE_URL=sandbox.base_url,
        DIALER_BLAND_API_KEY=keys[0],
        DIALER_WEBHOOK_SECRET=keys[1],
        DIALER_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/bland",
        DIALER_HTTP_HOST="127.0.0.1",
        DIALER_HTTP_PORT=str(port),
        DIALER_MAX_CONCURRENT_CALLS=str(args.concurrency),
        DIALER_MAX_CALLS_PER_SECOND=str(args.rate),
        DIALER_DISPATCH_IDLE_S="0.02",
        DIALER_CALLING_WINDOW="00:00-24:00",  # the sandbox calls nobody; the bench runs any hour
        DIALER_LOG_LEVEL="WARNING",
        DIALER_LOG_FORMAT="json",
    )
    return env


def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until `url` answers 200 (or the process dies)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def start_replica(env: dict[str, str], directory: Path, n: int) -> subprocess.Popen[bytes]:
    """`dialer serve` as a process."""
    log = (directory / f"replica-{n}.log").open("wb")
    argv = [sys.executable, "-m", "service", "serve"]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603 - our interpreter, no shell


async def sample(
    sandbox: Sandbox, database_url: str, total: int, cap: int, samples: Samples
) -> float:
    """Poll the sandbox (and the ledger's slots) until every call was created; the seconds."""
    started = time.perf_counter()
    ledger = await _connect(database_url, urlsplit(database_url).path.lstrip("/"))
    async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=10) as client:
        while True:
            counts = (await client.get("/_sandbox/counts")).json()
            created = int(counts.get("total", 0))
            if created >= total:
                await ledger.close()
                return time.perf_counter() - started
            active = int(counts["active"])
            held = int(await ledger.fetchval("SELECT count(*) FROM slots") or 0)
            samples.waiting += 1
            samples.waiting_at_cap += active >= cap
            samples.ledger_at_cap += held >= cap
            samples.idle_slot_s += max(0, cap - active) * SAMPLE_S
            samples.busy_slot_s += min(cap, active) * SAMPLE_S
            if time.perf_counter() - started > 1800:
                raise RuntimeError(f"only {created} of {total} calls after 30 minutes")
            await asyncio.sleep(SAMPLE_S)


def busiest_second(created_at: list[str]) -> int:
    """Most calls created within any 1 second (the sandbox stamps calls with real time)."""
    times = sorted(datetime.fromisoformat(t).timestamp() for t in created_at)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def run(args: argparse.Namespace) -> int:
    """Start everything, publish, measure, stop and clean up."""
    if not await broker_answers(args.amqp_url):
        print(f"bench: no broker at {args.amqp_url}", file=sys.stderr)
        return 1
    directory = Path(tempfile.mkdtemp(prefix="dialer-bench-limits-"))
    keys = (secrets.token_hex(8), secrets.token_hex(16))
    sandbox = start_sandbox(directory, keys[0], keys[1], sandbox_options(args.concurrency))
    database_url, name = await create_database(args.postgres_url)
    prefix = f"bench-limits-{uuid.uuid4().hex[:8]}"
    replicas = []
    try:
        for n in range(args.replicas):
            env = replica_env(args, sandbox, database_url, prefix, keys)
            replicas.append((start_replica(env, directory, n), env))
        for process, env in replicas:
            wait_http(f"http://127.0.0.1:{env['DIALER_HTTP_PORT']}/readyz", process, 90)
        bodies = [
            json.dumps({"phone_number": f"+1212{2_000_000 + i:07d}", "task": "Bench."}).encode()
            for i in range(args.requests)
        ]
        await publish(args.amqp_url, f"{prefix}.requests", "call.create", bodies)
        samples = Samples()
        elapsed_s = await sample(sandbox, database_url, args.requests, args.concurrency, samples)
        async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=30) as client:
            counts = (await client.get("/_sandbox/counts")).json()
            calls = (await client.get("/_sandbox/calls")).json()["calls"]
            tried = (await client.get("/_sandbox/requests")).json()["requests"]
    finally:
        for process, _ in replicas:
            process.send_signal(signal.SIGTERM)
        for process, _ in replicas:
            process.wait(timeout=60)
        sandbox.stop()
        await delete_topology(args.amqp_url, prefix)
        if args.keep_database:
            print(f"ledger kept: {database_url}")
        else:
            await _admin(args.postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    report(args, elapsed_s, samples, Seen(counts, calls, tried))
    print(f"\nlogs in {directory}")
    return 0


@dataclass
class Seen:
    """What the sandbox recorded: its counters, its calls, every POST it answered."""

    counts: dict[str, object]
    calls: list[dict[str, object]]
    tried: list[dict[str, object]]


def report(args: argparse.Namespace, elapsed_s: float, samples: Samples, seen: Seen) -> None:
    """Print the figures and the ratios."""
    counts, calls, tried = seen.counts, seen.calls, seen.tried
    refused = sum(1 for t in tried if t.get("status_code") == 429)
    mean_call_s = (MIN_TALK_S + MAX_TALK_S) / 2 / CLOCK_SPEED
    bound = min(float(args.rate), args.concurrency / mean_call_s)
    achieved = len(calls) / elapsed_s
    busiest = busiest_second([str(c["created_at"]) for c in calls])
    at_cap = samples.waiting_at_cap / samples.waiting if samples.waiting else 0.0
    over_cap = int(str(counts.get("max_active", 0))) > args.concurrency
    print(f"replicas x requests          {args.replicas} x {args.requests} (one PostgreSQL)")
    print(f"calls placed                 {len(calls)} in {elapsed_s:.1f} s")
    print(f"highest concurrency (cap)    {counts.get('max_active')} ({args.concurrency})")
    print(f"busiest 1-second window      {busiest} calls ({args.rate:g}/s configured)")
    print(f"429s from the sandbox        {refused}")
    print(f"violations                   {refused + int(over_cap) + int(busiest > args.rate)}")
    print(f"at the cap while work waited {at_cap:8.1%} of {samples.waiting} samples (sandbox)")
    ledger_at_cap = samples.ledger_at_cap / samples.waiting if samples.waiting else 0.0
    print(f"  the ledger's slots at cap  {ledger_at_cap:8.1%} (held from dial to outcome)")
    used = samples.busy_slot_s / max(1e-9, samples.busy_slot_s + samples.idle_slot_s)
    print(f"concurrency utilisation      {used:8.1%} (slot-seconds in use / available)")
    print(f"achieved / configured rate   {achieved / args.rate:8.1%} ({achieved:.2f} calls/s)")
    print(f"achieved / concurrency bound {achieved / bound:8.1%} (bound {bound:.2f} calls/s)")
    per_call_ms = samples.idle_slot_s / max(1, len(calls)) * 1000
    print(f"slot time lost per call      {per_call_ms:8.1f} ms (the limiter's added latency)")


def main() -> int:
    """Parse options and run."""
    parser = argparse.ArgumentParser(prog="python -m bench.limits", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--keep-database", action="store_true", help="keep the ledger to inspect")
    parser.add_argument(
        "--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
