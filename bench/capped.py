"""The limits bench's processes: a capped sandbox, `dialer serve` replicas, the poller."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench.common import database_url, postgres_admin
from sandbox.process import Sandbox, free_port

CLOCK_SPEED = 10.0  # simulated seconds per real second: 5-30 s talk is 0.5-3 s
MIN_TALK_S, MAX_TALK_S = 5.0, 30.0
SAMPLE_S = 0.02
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
POSTGRES_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class Options:
    """What the limits bench runs: replicas, requests and the caps under test."""

    requests: int = 2000
    replicas: int = 3
    concurrency: int = 10
    rate_per_s: float = 20.0
    amqp_url: str = AMQP_URL
    postgres_url: str = POSTGRES_URL
    keep_database: bool = False


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
    await postgres_admin(base_url, f'CREATE DATABASE "{name}"')
    return database_url(base_url, name), name


async def connect(url: str) -> asyncpg.Connection:
    """An asyncpg connection to the database of a SQLAlchemy URL."""
    parts = urlsplit(url.replace("postgresql+asyncpg", "postgresql"))
    return await asyncpg.connect(
        host=parts.hostname, port=parts.port or 5432, user=parts.username or "postgres",
        password=parts.password, database=parts.path.lstrip("/"),
    )  # fmt: skip


def replica_env(
    options: Options, sandbox: Sandbox, ledger_url: str, prefix: str, keys: tuple[str, str]
) -> dict[str, str]:
    """One replica's settings: the caps under test, any hour, quiet logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
    port = free_port()
    env.update(
        DIALER_AMQP_URL=options.amqp_url,
        DIALER_PREFIX=prefix,
        DIALER_DATABASE_URL=ledger_url,
        DIALER_DATABASE_POOL_SIZE="5",
        DIALER_BLAND_BASE_URL=sandbox.base_url,
        DIALER_BLAND_API_KEY=keys[0],
        DIALER_WEBHOOK_SECRET=keys[1],
        DIALER_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/bland",
        DIALER_HTTP_HOST="127.0.0.1",
        DIALER_HTTP_PORT=str(port),
        DIALER_MAX_CONCURRENT_CALLS=str(options.concurrency),
        DIALER_MAX_CALLS_PER_SECOND=str(options.rate_per_s),
        DIALER_DISPATCH_IDLE_S="0.02",
        DIALER_CALLING_WINDOW="00:00-24:00",  # the sandbox calls nobody; the bench runs any hour
        DIALER_LOG_LEVEL="WARNING",
        DIALER_LOG_FORMAT="json",
    )
    return env


async def wait_http(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Until `url` answers 200 (or the process dies)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                if (await client.get(url)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not answer within {timeout_s} s")


def start_replica(env: dict[str, str], directory: Path, n: int) -> subprocess.Popen[bytes]:
    """`dialer serve` as a process."""
    log = (directory / f"replica-{n}.log").open("wb")
    argv = [sys.executable, "-m", "service", "serve"]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # noqa: S603 - our interpreter, no shell


async def sample(
    sandbox: Sandbox, ledger_url: str, total: int, cap: int, samples: Samples
) -> float:
    """Poll the sandbox (and the ledger's slots) until every call was created; the seconds."""
    started = time.perf_counter()
    ledger = await connect(ledger_url)
    try:
        async with httpx.AsyncClient(base_url=sandbox.base_url, timeout=10) as client:
            while True:
                counts = (await client.get("/_sandbox/counts")).json()
                created = int(counts.get("total", 0))
                if created >= total:
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
    finally:
        await ledger.close()


def busiest_second(created_at: list[str]) -> int:
    """Most calls created within any 1 second (the sandbox stamps calls with real time)."""
    times = sorted(datetime.fromisoformat(t).timestamp() for t in created_at)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while t - times[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
