"""The measured service as a child process, with its own prefix, database and figures."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
from pydantic import SecretStr

from bench.common import counter, cpu_seconds, database_url, memory_mib, postgres_admin
from sandbox.process import Sandbox, free_port, start_sandbox
from service.bus.connection import Names
from service.bus.topology import declare_once, delete_topology
from service.settings import Settings

SANDBOX_OPTIONS = [
    "--plan", "enterprise", "--clock-speed", "2000", "--same-number-window-s", "0",
    "--max-concurrent", "0", "--max-per-hour", "0", "--max-per-day", "0",
    # The bench posts webhooks itself (the webhook row); dial rows measure the dial path only.
    "--webhook-loss-share", "1",
]  # fmt: skip
START_TIMEOUT_S = 120.0
POLL_S = 0.05
# Each scrape costs the service CPU (a fast scrape loop showed 5 % of it in the profile):
# progress is read from /metrics at this pace, a timing resolution well under 2 % of a run.
SCRAPE_S = 0.25


@dataclass
class Rig:
    """What every run of one `make bench` shares: broker, PostgreSQL server, one sandbox."""

    amqp_url: str
    postgres_url: str
    directory: Path
    sandbox: Sandbox
    api_key: str
    webhook_secret: str
    profile: bool = False

    @classmethod
    def start(cls, amqp_url: str, postgres_url: str, directory: Path, profile: bool) -> Rig:
        """Start the zero-latency sandbox."""
        key, secret = secrets.token_hex(8), secrets.token_hex(16)
        sandbox = start_sandbox(directory, key, secret, SANDBOX_OPTIONS)
        return cls(amqp_url, postgres_url, directory, sandbox, key, secret, profile)

    def stop(self) -> None:
        """Stop the sandbox."""
        self.sandbox.stop()


class Service:
    """`dialer serve` on a fresh prefix and database; figures from /metrics and /proc."""

    def __init__(
        self,
        rig: Rig,
        database: str,
        name: str,
        env: dict[str, str] | None = None,
        code_dir: Path | None = None,
    ):
        self.rig = rig
        self.code_dir = code_dir  # another checkout's service (before/after in one run)
        self.database = database
        self.name = name
        self.prefix = f"bench-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.extra_env = env or {}
        self.pg_name: str | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.profile_path: Path | None = None
        self.owner = True  # deletes the topology and database on close (replicas share them)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=10)

    @property
    def names(self) -> Names:
        """The broker names under this run's prefix."""
        return Names(self.prefix)

    @property
    def pid(self) -> int:
        """The service's process id."""
        if self.process is None:
            raise RuntimeError("not started")
        return self.process.pid

    async def prepare(self) -> None:
        """Database and topology, so that requests can be preloaded before the start."""
        await declare_once(Settings(amqp_url=SecretStr(self.rig.amqp_url), prefix=self.prefix))
        if self.database == "postgres":
            self.pg_name = f"bench_{uuid.uuid4().hex[:12]}"
            await postgres_admin(self.rig.postgres_url, f'CREATE DATABASE "{self.pg_name}"')

    def database_url(self) -> str:
        """SQLite in the run's directory, or this run's PostgreSQL database."""
        if self.pg_name is not None:
            return database_url(self.rig.postgres_url, self.pg_name)
        return f"sqlite+aiosqlite:///{(self.rig.directory / f'{self.prefix}.db').as_posix()}"

    def env(self) -> dict[str, str]:
        """Production defaults, except limits high enough to measure the pipeline."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DIALER_")}
        env.update(
            DIALER_AMQP_URL=self.rig.amqp_url,
            DIALER_PREFIX=self.prefix,
            DIALER_DATABASE_URL=self.database_url(),
            DIALER_BLAND_BASE_URL=self.rig.sandbox.base_url,
            DIALER_BLAND_API_KEY=self.rig.api_key,
            DIALER_WEBHOOK_SECRET=self.rig.webhook_secret,
            DIALER_WEBHOOK_URL=f"{self.base_url}/webhooks/bland",
            DIALER_HTTP_HOST="127.0.0.1",
            DIALER_HTTP_PORT=str(self.port),
            DIALER_MAX_CONCURRENT_CALLS="1000000",  # no admission wait: measure the pipeline
            DIALER_MAX_CALLS_PER_SECOND="100000",
            # The bench's fictional numbers repeat, and it runs at any hour: the compliance
            # checks still run, but no window, cap or gap holds a request back.
            DIALER_CALLING_WINDOW="00:00-24:00",
            DIALER_REGION_RULES="{}",
            DIALER_MAX_CALLS_PER_NUMBER_24H="0",
            DIALER_SAME_NUMBER_GAP_S="0",
            DIALER_LOG_FORMAT="json",
            # Webhooks are not sent during dial runs (the webhook row sends its own): without
            # this the poller would ask the sandbox for every call once its outcome is overdue.
            DIALER_OUTCOME_OVERDUE_S="86400",
        )
        env.update(self.extra_env)
        return env

    def start(self) -> None:
        """Start the process (under cProfile when the rig profiles)."""
        argv = [sys.executable, "-m", "service", "serve"]
        if self.rig.profile:
            self.profile_path = self.rig.directory / f"{self.name}-{self.prefix}.prof"
            argv = [sys.executable, "-m", "bench.profiled", str(self.profile_path), "serve"]
        log = (self.rig.directory / f"{self.name}-{self.prefix}.log").open("wb")
        if self.code_dir is not None:  # `-m service` imports the package of the working dir
            argv = [sys.executable, "-m", "service", "serve"]
        self.process = subprocess.Popen(  # noqa: S603 - our interpreter, no shell
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env(), cwd=self.code_dir
        )

    async def wait_path(self, path: str) -> None:
        """Until `path` answers 200 (the process must stay alive)."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name}: the service exited ({self.process.returncode})")
            try:
                if (await self._http.get(path)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"{self.name}: {path} did not answer within {START_TIMEOUT_S} s")

    async def metrics(self) -> str:
        """The Prometheus exposition."""
        return (await self._http.get("/metrics")).text

    async def accepted(self) -> float:
        """Requests written to the ledger and acked."""
        return counter(await self.metrics(), "dialer_requests_consumed_total", 'outcome="accepted"')

    async def published(self, event_type: str) -> float:
        """Events of one type confirmed by the broker."""
        label = f'event_type="{event_type}"'
        return counter(await self.metrics(), "dialer_events_published_total", label)

    def cpu_s(self) -> float | None:
        """CPU seconds used so far."""
        return cpu_seconds(self.pid)

    def rss_mib(self) -> float | None:
        """Resident memory now."""
        return memory_mib(self.pid)

    def peak_rss_mib(self) -> float | None:
        """Peak resident memory."""
        return memory_mib(self.pid, "VmHWM")

    def stop(self) -> None:
        """SIGTERM and wait (the profile is written on a clean exit)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def replica(self, number: int) -> Service:
        """Another process on this one's prefix and database (after `prepare()`)."""
        other = Service(self.rig, self.database, f"{self.name}-{number}", self.extra_env)
        other.prefix, other.pg_name = self.prefix, self.pg_name
        other.owner = False
        return other

    async def close(self) -> None:
        """Stop, remove the prefix's topology and the PostgreSQL database (not a replica's)."""
        self.stop()
        await self._http.aclose()
        if not self.owner:
            return
        await delete_topology(self.rig.amqp_url, self.prefix)
        await delete_queue(self.rig.amqp_url, self.events_queue)
        if self.pg_name is not None:
            await postgres_admin(
                self.rig.postgres_url, f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'
            )

    @property
    def events_queue(self) -> str:
        """A queue bound to every event, so that events are routed as in production."""
        return f"{self.prefix}.bench-events"

    async def bind_events(self, routing_key: str = "#") -> None:
        """Declare the events queue and bind it."""
        connection = await aio_pika.connect(self.rig.amqp_url)
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(
                self.events_queue, durable=True, arguments={"x-queue-type": "quorum"}
            )
            await queue.bind(self.names.events, routing_key)


async def delete_queue(url: str, name: str) -> None:
    """Delete a queue if it exists."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        with contextlib.suppress(aio_pika.exceptions.AMQPError):
            await channel.queue_delete(name)


async def wait_until(
    read: Callable[[], Awaitable[float]], target: float, timeout_s: float, what: str
) -> float:
    """Poll an async probe until it reaches target; the time it did (perf_counter)."""
    deadline = time.monotonic() + timeout_s
    value = 0.0
    while time.monotonic() < deadline:
        value = await read()
        if value >= target:
            return time.perf_counter()
        await asyncio.sleep(SCRAPE_S)
    raise RuntimeError(f"{what}: {value:.0f} of {target:.0f} after {timeout_s:.0f} s")
